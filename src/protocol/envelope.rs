//! The publish envelope: what a NATS publisher may put in a message payload
//! to give Sluice a key, headers, an ack inbox, a correlation id, an ack
//! policy or a target partition.
//!
//! ```text
//! payload = ENVELOPE_COOKIE (8 bytes) | flatbuffer, root table Envelope (schema/envelope.fbs)
//! ```
//!
//! A payload without the cookie, or with the cookie but a body that does not
//! verify, is not an envelope: the bridge stores it as a plain message,
//! cookie and all ([`Envelope::parse`] returns `None`).

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, InvalidFlatbuffer, WIPOffset};

use super::body::read_body;
use super::generated::envelope as fb;
use super::limits::{ENVELOPE_HEADERS_MAX, NATS_PAYLOAD_BYTES_MAX};

/// First bytes of an envelope payload: `0xAB "SLCENV" 0x01`. `0xAB` is a
/// UTF-8 continuation byte, so no UTF-8 text starts with it; the last byte is
/// the envelope format version.
pub const ENVELOPE_COOKIE: [u8; 8] = [0xAB, b'S', b'L', b'C', b'E', b'N', b'V', 0x01];

/// Flatbuffer overhead allowed per envelope and per header when checking an
/// envelope's size before building it (vtables, offsets, length prefixes,
/// padding); generous so the check is an upper bound.
const ENVELOPE_OVERHEAD_BYTES: usize = 256;
const HEADER_OVERHEAD_BYTES: usize = 32;

/// When a publisher is acked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AckPolicy {
    /// No ack.
    None,
    /// Once the record is durable (fsynced) on the partition leader.
    Leader,
    /// Once the record is durable on the leader and on at least
    /// `min_insync_replicas` in-sync replicas.
    All,
}

impl AckPolicy {
    /// The wire value; `None` for a value this build does not know.
    pub fn from_wire(policy: fb::AckPolicy) -> Option<AckPolicy> {
        match policy {
            fb::AckPolicy::None => Some(AckPolicy::None),
            fb::AckPolicy::Leader => Some(AckPolicy::Leader),
            fb::AckPolicy::All => Some(AckPolicy::All),
            _ => None,
        }
    }

    pub const fn to_wire(self) -> fb::AckPolicy {
        match self {
            AckPolicy::None => fb::AckPolicy::None,
            AckPolicy::Leader => fb::AckPolicy::Leader,
            AckPolicy::All => fb::AckPolicy::All,
        }
    }
}

/// One record header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    /// `None` = null value.
    pub value: Option<Bytes>,
}

/// A decoded envelope, owning its fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// `None` = null key.
    pub key: Option<Bytes>,
    pub headers: Vec<Header>,
    /// `None` = null value (a tombstone under key compaction).
    pub value: Option<Bytes>,
    /// Where the ack goes; `None` = the message's reply subject.
    pub ack_inbox: Option<String>,
    /// Echoed in the ack.
    pub correlation_id: Option<String>,
    /// `None` = the stream's default.
    pub ack_policy: Option<AckPolicy>,
    /// `None` = not named (wire value -1): the subject decides.
    pub partition: Option<u32>,
}

/// Why a payload is not an envelope.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("payload does not start with the envelope cookie")]
    NoCookie,
    #[error("payload of {payload_bytes} bytes exceeds {NATS_PAYLOAD_BYTES_MAX}")]
    TooLarge { payload_bytes: usize },
    #[error("envelope does not verify: {0}")]
    Invalid(#[from] InvalidFlatbuffer),
    #[error("envelope has {count} headers, more than {ENVELOPE_HEADERS_MAX}")]
    TooManyHeaders { count: usize },
    #[error("envelope header {index} has no key")]
    HeaderWithoutKey { index: usize },
    #[error("envelope names partition {partition} (only -1 or >= 0 are valid)")]
    BadPartition { partition: i32 },
    #[error("envelope has unknown ack policy {value}")]
    UnknownAckPolicy { value: u8 },
}

/// Why an envelope could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeEnvelopeError {
    #[error("envelope of about {bytes} bytes would exceed {NATS_PAYLOAD_BYTES_MAX}")]
    TooLarge { bytes: usize },
    #[error("envelope has {count} headers, more than {ENVELOPE_HEADERS_MAX}")]
    TooManyHeaders { count: usize },
    #[error("partition {partition} does not fit the wire's int32")]
    PartitionOutOfRange { partition: u32 },
}

/// Whether `payload` starts with [`ENVELOPE_COOKIE`] (it may still not verify).
pub fn has_envelope_cookie(payload: &[u8]) -> bool {
    payload.starts_with(&ENVELOPE_COOKIE)
}

impl Envelope {
    /// The envelope in `payload`, or `None` when the payload is to be stored
    /// as a plain message (no cookie, or a body that does not verify).
    pub fn parse(payload: &[u8]) -> Option<Envelope> {
        Envelope::decode(payload).ok()
    }

    /// Like [`Envelope::parse`], saying why a payload is not an envelope.
    /// Copies key, value and header values out of `payload`.
    pub fn decode(payload: &[u8]) -> Result<Envelope, EnvelopeError> {
        Envelope::decode_with(payload, Bytes::copy_from_slice)
    }

    /// Like [`Envelope::decode`] for a payload already in a [`Bytes`] (as
    /// NATS clients hand it over): key, value and header values are slices of
    /// `payload`, not copies, which matters on the ingest path.
    pub fn decode_shared(payload: &Bytes) -> Result<Envelope, EnvelopeError> {
        // Every slice handed to the closure is a verified vector inside `payload`.
        Envelope::decode_with(payload, |field| payload.slice_ref(field))
    }

    fn decode_with(
        payload: &[u8],
        to_bytes: impl Fn(&[u8]) -> Bytes,
    ) -> Result<Envelope, EnvelopeError> {
        let body = payload
            .strip_prefix(&ENVELOPE_COOKIE)
            .ok_or(EnvelopeError::NoCookie)?;
        if payload.len() > NATS_PAYLOAD_BYTES_MAX {
            return Err(EnvelopeError::TooLarge {
                payload_bytes: payload.len(),
            });
        }
        let envelope = read_body::<fb::Envelope>(body)
            .map_err(|error| EnvelopeError::Invalid(error.source))?;
        let partition = match envelope.partition() {
            -1 => None,
            partition => Some(
                u32::try_from(partition).map_err(|_| EnvelopeError::BadPartition { partition })?,
            ),
        };
        let ack_policy = match envelope.ack_policy() {
            None => None,
            Some(policy) => Some(
                AckPolicy::from_wire(policy)
                    .ok_or(EnvelopeError::UnknownAckPolicy { value: policy.0 })?,
            ),
        };
        Ok(Envelope {
            key: envelope.key().map(|key| to_bytes(key.bytes())),
            headers: decode_headers(envelope.headers(), &to_bytes)?,
            value: envelope.value().map(|value| to_bytes(value.bytes())),
            ack_inbox: envelope.ack_inbox().map(str::to_owned),
            correlation_id: envelope.correlation_id().map(str::to_owned),
            ack_policy,
            partition,
        })
    }

    /// Upper bound of the encoded size, for the limit check.
    fn encoded_bytes_bound(&self) -> usize {
        let optional = |field: Option<usize>| field.unwrap_or(0);
        let headers: usize = self
            .headers
            .iter()
            .map(|header| {
                header
                    .key
                    .len()
                    .saturating_add(optional(header.value.as_ref().map(Bytes::len)))
                    .saturating_add(HEADER_OVERHEAD_BYTES)
            })
            .fold(0, usize::saturating_add);
        ENVELOPE_COOKIE
            .len()
            .saturating_add(ENVELOPE_OVERHEAD_BYTES)
            .saturating_add(headers)
            .saturating_add(optional(self.key.as_ref().map(Bytes::len)))
            .saturating_add(optional(self.value.as_ref().map(Bytes::len)))
            .saturating_add(optional(self.ack_inbox.as_ref().map(String::len)))
            .saturating_add(optional(self.correlation_id.as_ref().map(String::len)))
    }
}

fn decode_headers(
    headers: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<fb::Header<'_>>>>,
    to_bytes: &impl Fn(&[u8]) -> Bytes,
) -> Result<Vec<Header>, EnvelopeError> {
    let Some(headers) = headers else {
        return Ok(Vec::new());
    };
    if headers.len() > ENVELOPE_HEADERS_MAX {
        return Err(EnvelopeError::TooManyHeaders {
            count: headers.len(),
        });
    }
    headers
        .iter()
        .enumerate()
        .map(|(index, header)| {
            Ok(Header {
                key: header
                    .key()
                    .ok_or(EnvelopeError::HeaderWithoutKey { index })?
                    .to_owned(),
                value: header.value().map(|value| to_bytes(value.bytes())),
            })
        })
        .collect()
}

/// Encodes `envelope` as a NATS payload: cookie, then the flatbuffer.
pub fn encode_envelope(envelope: &Envelope) -> Result<Vec<u8>, EncodeEnvelopeError> {
    if envelope.headers.len() > ENVELOPE_HEADERS_MAX {
        return Err(EncodeEnvelopeError::TooManyHeaders {
            count: envelope.headers.len(),
        });
    }
    let bytes = envelope.encoded_bytes_bound();
    if bytes > NATS_PAYLOAD_BYTES_MAX {
        return Err(EncodeEnvelopeError::TooLarge { bytes });
    }
    let partition = match envelope.partition {
        None => -1,
        Some(partition) => i32::try_from(partition)
            .map_err(|_| EncodeEnvelopeError::PartitionOutOfRange { partition })?,
    };

    let mut fbb = FlatBufferBuilder::with_capacity(bytes);
    let headers: Vec<WIPOffset<fb::Header<'_>>> = envelope
        .headers
        .iter()
        .map(|header| {
            let key = fbb.create_string(&header.key);
            let value = header.value.as_ref().map(|value| fbb.create_vector(value));
            fb::Header::create(
                &mut fbb,
                &fb::HeaderArgs {
                    key: Some(key),
                    value,
                },
            )
        })
        .collect();
    let headers = (!headers.is_empty()).then(|| fbb.create_vector(&headers));
    let key = envelope.key.as_ref().map(|key| fbb.create_vector(key));
    let value = envelope
        .value
        .as_ref()
        .map(|value| fbb.create_vector(value));
    let ack_inbox = envelope.ack_inbox.as_deref().map(|s| fbb.create_string(s));
    let correlation_id = envelope
        .correlation_id
        .as_deref()
        .map(|s| fbb.create_string(s));
    let root = fb::Envelope::create(
        &mut fbb,
        &fb::EnvelopeArgs {
            key,
            headers,
            value,
            ack_inbox,
            correlation_id,
            ack_policy: envelope.ack_policy.map(AckPolicy::to_wire),
            partition,
        },
    );
    fbb.finish_minimal(root);
    Ok(with_cookie(&ENVELOPE_COOKIE, fbb.finished_data()))
}

/// `cookie` followed by `body`, in one allocation.
pub(super) fn with_cookie(cookie: &[u8], body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(cookie.len() + body.len());
    payload.extend_from_slice(cookie);
    payload.extend_from_slice(body);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn full_envelope() -> Envelope {
        Envelope {
            key: Some(Bytes::from_static(b"user-42")),
            headers: vec![
                Header {
                    key: "trace".to_owned(),
                    value: Some(Bytes::from_static(b"abc")),
                },
                Header {
                    key: "empty".to_owned(),
                    value: Some(Bytes::new()),
                },
                Header {
                    key: "null".to_owned(),
                    value: None,
                },
            ],
            value: Some(Bytes::from_static(b"{\"amount\":12}")),
            ack_inbox: Some("_INBOX.abc".to_owned()),
            correlation_id: Some("corr-1".to_owned()),
            ack_policy: Some(AckPolicy::All),
            partition: Some(3),
        }
    }

    #[test]
    fn round_trip_full() {
        let envelope = full_envelope();
        let payload = encode_envelope(&envelope).expect("encode");
        assert!(has_envelope_cookie(&payload));
        assert_eq!(Envelope::parse(&payload), Some(envelope.clone()));

        let shared = Bytes::from(payload);
        let decoded = Envelope::decode_shared(&shared).expect("decode");
        assert_eq!(decoded, envelope);
        let value = decoded.value.expect("value");
        let inside = shared.as_ptr_range();
        assert!(
            inside.contains(&value.as_ptr()),
            "value is a slice, not a copy"
        );
    }

    #[test]
    fn round_trip_empty_keeps_nulls_and_defaults() {
        let envelope = Envelope::default();
        let payload = encode_envelope(&envelope).expect("encode");
        let decoded = Envelope::decode(&payload).expect("decode");
        assert_eq!(decoded, envelope);
        assert_eq!(decoded.partition, None);
        assert_eq!(decoded.ack_policy, None);
        assert_eq!(decoded.value, None);
    }

    #[test]
    fn round_trip_distinguishes_empty_from_null() {
        let envelope = Envelope {
            key: Some(Bytes::new()),
            value: Some(Bytes::new()),
            partition: Some(0),
            ack_policy: Some(AckPolicy::None),
            ..Envelope::default()
        };
        let payload = encode_envelope(&envelope).expect("encode");
        assert_eq!(Envelope::parse(&payload), Some(envelope));
    }

    #[test]
    fn no_cookie_is_plain() {
        assert_eq!(Envelope::decode(b"hello"), Err(EnvelopeError::NoCookie));
        assert_eq!(Envelope::parse(b""), None);
        let payload = encode_envelope(&full_envelope()).expect("encode");
        let body = payload.get(ENVELOPE_COOKIE.len()..).expect("cookie");
        assert_eq!(Envelope::parse(body), None);
    }

    #[test]
    fn cookie_with_garbage_body_is_plain() {
        let mut payload = ENVELOPE_COOKIE.to_vec();
        payload.extend_from_slice(b"definitely not a flatbuffer");
        assert!(matches!(
            Envelope::decode(&payload),
            Err(EnvelopeError::Invalid(_))
        ));
        assert_eq!(Envelope::parse(&payload), None);
        assert_eq!(Envelope::parse(&ENVELOPE_COOKIE), None);
    }

    #[test]
    fn most_headers_allowed_round_trip() {
        let envelope = Envelope {
            headers: vec![
                Header {
                    key: String::new(),
                    value: None
                };
                ENVELOPE_HEADERS_MAX
            ],
            ..Envelope::default()
        };
        let payload = encode_envelope(&envelope).expect("encode");
        assert_eq!(Envelope::decode(&payload), Ok(envelope));
    }

    /// A crafted buffer whose header vector points 1000 times at one header
    /// with a 10 KiB value would expand to ~10 MB of copies; the verifier's
    /// apparent-size bound refuses it.
    #[test]
    fn shared_substructures_cannot_amplify() {
        let mut fbb = FlatBufferBuilder::new();
        let key = fbb.create_string("k");
        let value = fbb.create_vector(&[7u8; 10 << 10]);
        let header = fb::Header::create(
            &mut fbb,
            &fb::HeaderArgs {
                key: Some(key),
                value: Some(value),
            },
        );
        let headers = Some(fbb.create_vector(&[header; 1000]));
        let root = fb::Envelope::create(
            &mut fbb,
            &fb::EnvelopeArgs {
                headers,
                ..fb::EnvelopeArgs::default()
            },
        );
        fbb.finish_minimal(root);
        let payload = with_cookie(&ENVELOPE_COOKIE, fbb.finished_data());
        assert!(payload.len() < 20 << 10);
        assert!(matches!(
            Envelope::decode(&payload),
            Err(EnvelopeError::Invalid(
                InvalidFlatbuffer::ApparentSizeTooLarge
            ))
        ));
    }

    /// Cutting bytes off the end either loses something the verifier needs
    /// (stored as plain) or only trailing alignment padding (same envelope):
    /// a truncated envelope never decodes into a different one.
    #[test]
    fn truncated_envelope_is_plain_or_unchanged() {
        let envelope = full_envelope();
        let payload = encode_envelope(&envelope).expect("encode");
        let mut plain = 0;
        for len in 0..payload.len() {
            let prefix = payload.get(..len).expect("prefix");
            match Envelope::parse(prefix) {
                None => plain += 1,
                Some(decoded) => assert_eq!(decoded, envelope, "prefix of {len} bytes"),
            }
        }
        assert!(
            plain >= payload.len() - 8,
            "{plain} of {} prefixes plain",
            payload.len()
        );
    }

    /// Builds an envelope flatbuffer directly, to reach states `encode_envelope` refuses.
    fn raw_envelope(partition: i32, ack_policy: Option<u8>, header_key: Option<&str>) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let key = header_key.map(|key| fbb.create_string(key));
        let header = fb::Header::create(&mut fbb, &fb::HeaderArgs { key, value: None });
        let headers = Some(fbb.create_vector(&[header]));
        let root = fb::Envelope::create(
            &mut fbb,
            &fb::EnvelopeArgs {
                headers,
                partition,
                ack_policy: ack_policy.map(fb::AckPolicy),
                ..fb::EnvelopeArgs::default()
            },
        );
        fbb.finish_minimal(root);
        with_cookie(&ENVELOPE_COOKIE, fbb.finished_data())
    }

    #[test]
    fn semantically_invalid_envelopes_are_plain() {
        assert!(Envelope::parse(&raw_envelope(-1, Some(2), Some("k"))).is_some());
        assert_eq!(
            Envelope::decode(&raw_envelope(-2, None, Some("k"))),
            Err(EnvelopeError::BadPartition { partition: -2 })
        );
        assert_eq!(
            Envelope::decode(&raw_envelope(-1, Some(9), Some("k"))),
            Err(EnvelopeError::UnknownAckPolicy { value: 9 })
        );
        assert_eq!(
            Envelope::decode(&raw_envelope(-1, None, None)),
            Err(EnvelopeError::HeaderWithoutKey { index: 0 })
        );
    }

    #[test]
    fn encode_refuses_what_decode_would_reject() {
        let too_many = Envelope {
            headers: vec![
                Header {
                    key: String::new(),
                    value: None
                };
                ENVELOPE_HEADERS_MAX + 1
            ],
            ..Envelope::default()
        };
        assert_eq!(
            encode_envelope(&too_many),
            Err(EncodeEnvelopeError::TooManyHeaders {
                count: ENVELOPE_HEADERS_MAX + 1
            })
        );
        let partition = Envelope {
            partition: Some(u32::MAX),
            ..Envelope::default()
        };
        assert_eq!(
            encode_envelope(&partition),
            Err(EncodeEnvelopeError::PartitionOutOfRange {
                partition: u32::MAX
            })
        );
        let big = Envelope {
            value: Some(Bytes::from(vec![0u8; NATS_PAYLOAD_BYTES_MAX])),
            ..Envelope::default()
        };
        assert!(matches!(
            encode_envelope(&big),
            Err(EncodeEnvelopeError::TooLarge { .. })
        ));
    }

    fn arb_bytes() -> impl Strategy<Value = Option<Bytes>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from))
    }

    fn arb_envelope() -> impl Strategy<Value = Envelope> {
        let header = (".{0,16}", arb_bytes()).prop_map(|(key, value)| Header { key, value });
        (
            arb_bytes(),
            proptest::collection::vec(header, 0..8),
            arb_bytes(),
            proptest::option::of(".{0,32}"),
            proptest::option::of(".{0,32}"),
            proptest::option::of(prop_oneof![
                Just(AckPolicy::None),
                Just(AckPolicy::Leader),
                Just(AckPolicy::All)
            ]),
            proptest::option::of(0..=i32::MAX as u32),
        )
            .prop_map(
                |(key, headers, value, ack_inbox, correlation_id, ack_policy, partition)| {
                    Envelope {
                        key,
                        headers,
                        value,
                        ack_inbox,
                        correlation_id,
                        ack_policy,
                        partition,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::parse(&body);
            let payload = with_cookie(&ENVELOPE_COOKIE, &body);
            let _ = Envelope::parse(&payload);
        }

        #[test]
        fn mutated_envelopes_never_panic(
            envelope in arb_envelope(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let mut payload = encode_envelope(&envelope).expect("encode");
            for (at, byte) in flips {
                let index = ENVELOPE_COOKIE.len() + at % (payload.len() - ENVELOPE_COOKIE.len());
                if let Some(slot) = payload.get_mut(index) {
                    *slot ^= byte;
                }
            }
            let _ = Envelope::parse(&payload);
        }

        #[test]
        fn arbitrary_envelopes_round_trip(envelope in arb_envelope()) {
            let payload = encode_envelope(&envelope).expect("encode");
            prop_assert_eq!(
                Envelope::decode_shared(&Bytes::from(payload.clone())),
                Ok(envelope.clone())
            );
            prop_assert_eq!(Envelope::parse(&payload), Some(envelope));
        }

        #[test]
        fn shared_decode_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::decode_shared(&Bytes::from(with_cookie(&ENVELOPE_COOKIE, &body)));
        }
    }
}
