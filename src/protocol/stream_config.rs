//! `StreamConfig`: a stream's settings as CreateStream sends them and
//! Metadata reports them, shared by [`super::create_stream`] and
//! [`super::metadata`].

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::body::DecodeError;
use super::envelope::AckPolicy;
use super::generated::protocol as fb;
use crate::model::StreamSpec;

const TABLE: &str = "StreamConfig";

/// A stream retention limit as the wire carries it: `0` = the server's
/// default, `-1` = no limit, `> 0` = the limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Limit {
    /// Whatever the server is configured with (wire `0`).
    #[default]
    ServerDefault,
    /// No limit (wire `-1`).
    Unlimited,
    /// At most this much (wire `> 0`; `0` is not a valid limit).
    Max(u64),
}

impl Limit {
    /// The wire value. A limit above `i64::MAX` is sent as `i64::MAX`.
    pub fn to_wire(self) -> i64 {
        match self {
            Limit::ServerDefault => 0,
            Limit::Unlimited => -1,
            Limit::Max(value) => i64::try_from(value).unwrap_or(i64::MAX).max(1),
        }
    }

    /// Reads a wire value; any negative value is "no limit".
    pub fn from_wire(value: i64) -> Limit {
        match u64::try_from(value) {
            Ok(0) => Limit::ServerDefault,
            Ok(value) => Limit::Max(value),
            Err(_) => Limit::Unlimited,
        }
    }

    /// From the cluster's resolved form, where `None` means "no limit".
    fn from_spec(value: Option<u64>) -> Limit {
        value.map_or(Limit::Unlimited, Limit::Max)
    }

    /// The limit, `None` for "no limit" and "the server's default" alike
    /// (the cluster fills in defaults when it validates a spec).
    pub fn max(self) -> Option<u64> {
        match self {
            Limit::Max(value) => Some(value),
            _ => None,
        }
    }
}

/// A stream's settings as `CreateStream` sends them and `Metadata` reports
/// them (`StreamConfig` in `schema/protocol.fbs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamConfig {
    pub name: String,
    /// NATS subject of partition 0 (partition `i > 0` listens on `subject.i`).
    pub subject: String,
    /// Consumer group (NATS queue group); `None` = no group.
    pub group: Option<String>,
    /// `None` = the server's default.
    pub partitions: Option<u32>,
    /// `None` = the server's default.
    pub replication_factor: Option<u16>,
    /// `None` = the server's default.
    pub min_insync_replicas: Option<u16>,
    /// Milliseconds.
    pub retention_age_ms: Limit,
    pub retention_bytes: Limit,
    pub retention_messages: Limit,
    pub compact: bool,
    /// `None` = the server's default.
    pub ack_policy: Option<AckPolicy>,
}

impl StreamConfig {
    /// Name and subject; every other setting is the server's default.
    pub fn new(name: impl Into<String>, subject: impl Into<String>) -> StreamConfig {
        StreamConfig {
            name: name.into(),
            subject: subject.into(),
            ..StreamConfig::default()
        }
    }

    /// Writes this config as a `StreamConfig` table.
    pub fn encode_into<'a>(
        &self,
        fbb: &mut FlatBufferBuilder<'a>,
    ) -> WIPOffset<fb::StreamConfig<'a>> {
        let name = fbb.create_string(&self.name);
        let subject = fbb.create_string(&self.subject);
        let group = self.group.as_deref().map(|group| fbb.create_string(group));
        let small = |value: Option<u16>| value.map_or(0, |v| i16::try_from(v).unwrap_or(i16::MAX));
        fb::StreamConfig::create(
            fbb,
            &fb::StreamConfigArgs {
                name: Some(name),
                subject: Some(subject),
                group,
                partitions: self
                    .partitions
                    .map_or(0, |p| i32::try_from(p).unwrap_or(i32::MAX)),
                replication_factor: small(self.replication_factor),
                min_insync_replicas: small(self.min_insync_replicas),
                retention_age_ms: self.retention_age_ms.to_wire(),
                retention_bytes: self.retention_bytes.to_wire(),
                retention_messages: self.retention_messages.to_wire(),
                compact: self.compact,
                ack_policy: self.ack_policy.map(AckPolicy::to_wire),
            },
        )
    }

    /// Reads a verified `StreamConfig` table. Counts are range-checked
    /// (0 = server default, negative = an error); an unknown ack policy is
    /// an error.
    pub fn decode_table(config: fb::StreamConfig<'_>) -> Result<StreamConfig, DecodeError> {
        fn count<T: TryFrom<i64>>(
            field: &'static str,
            value: i64,
        ) -> Result<Option<T>, DecodeError> {
            match value {
                0 => Ok(None),
                value if value < 0 => Err(DecodeError::field(
                    TABLE,
                    field,
                    format!("negative {field} {value}"),
                )),
                value => T::try_from(value)
                    .map(Some)
                    .map_err(|_| DecodeError::field(TABLE, field, format!("{value} is too large"))),
            }
        }
        let ack_policy = match config.ack_policy() {
            None => None,
            Some(policy) => Some(AckPolicy::from_wire(policy).ok_or_else(|| {
                DecodeError::field(
                    TABLE,
                    "ack_policy",
                    format!("unknown ack policy {}", policy.0),
                )
            })?),
        };
        Ok(StreamConfig {
            name: config.name().unwrap_or_default().to_owned(),
            subject: config.subject().unwrap_or_default().to_owned(),
            group: config.group().filter(|g| !g.is_empty()).map(str::to_owned),
            partitions: count("partitions", config.partitions().into())?,
            replication_factor: count("replication_factor", config.replication_factor().into())?,
            min_insync_replicas: count("min_insync_replicas", config.min_insync_replicas().into())?,
            retention_age_ms: Limit::from_wire(config.retention_age_ms()),
            retention_bytes: Limit::from_wire(config.retention_bytes()),
            retention_messages: Limit::from_wire(config.retention_messages()),
            compact: config.compact(),
            ack_policy,
        })
    }
}

impl From<&StreamSpec> for StreamConfig {
    /// The cluster's fully resolved spec: every field explicit, absent
    /// retention limits meaning "no limit" rather than "server default".
    fn from(spec: &StreamSpec) -> StreamConfig {
        StreamConfig {
            name: spec.name.clone(),
            subject: spec.subject.clone(),
            group: spec.group.clone(),
            partitions: Some(spec.partitions),
            replication_factor: Some(u16::try_from(spec.replication_factor).unwrap_or(u16::MAX)),
            min_insync_replicas: Some(u16::try_from(spec.min_insync_replicas).unwrap_or(u16::MAX)),
            retention_age_ms: Limit::from_spec(spec.retention_age_ms),
            retention_bytes: Limit::from_spec(spec.retention_bytes),
            retention_messages: Limit::from_spec(spec.retention_messages),
            compact: spec.compact,
            ack_policy: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::body::read_body;

    fn round_trip(config: &StreamConfig) -> (Vec<u8>, StreamConfig) {
        let mut fbb = FlatBufferBuilder::new();
        let root = config.encode_into(&mut fbb);
        fbb.finish_minimal(root);
        let body = fbb.finished_data().to_vec();
        let table = read_body::<fb::StreamConfig>(&body).expect("verifies");
        let decoded = StreamConfig::decode_table(table).expect("decodes");
        (body, decoded)
    }

    #[test]
    fn stream_config_round_trips_through_the_wire_table() {
        let config = StreamConfig {
            name: "orders".into(),
            subject: "orders.>".into(),
            group: Some("g".into()),
            partitions: Some(3),
            replication_factor: Some(2),
            min_insync_replicas: None,
            retention_age_ms: Limit::Max(7 * 86_400_000),
            retention_bytes: Limit::Unlimited,
            retention_messages: Limit::ServerDefault,
            compact: true,
            ack_policy: Some(AckPolicy::All),
        };
        let (body, decoded) = round_trip(&config);
        let wire = read_body::<fb::StreamConfig>(&body).expect("verifies");
        assert_eq!(wire.retention_age_ms(), 7 * 86_400_000);
        assert_eq!(wire.retention_bytes(), -1);
        assert_eq!(wire.retention_messages(), 0);
        assert_eq!(wire.partitions(), 3);
        assert_eq!(decoded, config);
    }

    #[test]
    fn defaults_and_sentinels() {
        let (body, decoded) = round_trip(&StreamConfig::new("s", "s"));
        let wire = read_body::<fb::StreamConfig>(&body).expect("verifies");
        assert_eq!((wire.partitions(), wire.replication_factor()), (0, 0));
        assert_eq!(wire.group(), None);
        assert_eq!(wire.ack_policy(), None);
        assert_eq!(decoded, StreamConfig::new("s", "s"));
        assert_eq!(Limit::from_wire(-7), Limit::Unlimited);
        assert_eq!(Limit::Max(u64::MAX).to_wire(), i64::MAX);
    }
}
