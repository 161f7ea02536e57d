//! NATS message ⇄ Sluice record, and Sluice append result → NATS ack.
//!
//! Pure conversions, no I/O: the router calls them on the control core.
//!
//! A message's NATS subject and reply subject are kept as record headers
//! (`nats.subject`, `nats.reply`) so a wildcard stream keeps each message's
//! subject; NATS 2.x headers become record headers in order. A payload that
//! starts with the envelope cookie and decodes as an envelope gives key,
//! headers, value, ack inbox, correlation id, ack policy and partition; one
//! that has the cookie but does not decode is stored whole as a plain
//! message (never dropped).

use bytes::Bytes;
use shards::batch::{Header, Record};
use shards::types::TimestampMs;

use crate::cores::{AckRoute, AppendFailure, CommitLevel, Committed};
use crate::model::NodeId;
use crate::protocol::ack::{encode_ack, Ack, AckOutcome};
use crate::protocol::envelope::{has_envelope_cookie, AckPolicy, Envelope};

/// Record header holding the NATS subject a message arrived on.
pub const SUBJECT_HEADER: &str = "nats.subject";
/// Record header holding the message's NATS reply subject, if it had one.
pub const REPLY_HEADER: &str = "nats.reply";

/// One NATS message, taken apart.
#[derive(Debug)]
pub struct Ingested {
    pub record: Record,
    pub ack: Option<AckRoute>,
    /// The partition named by an envelope, overriding the subject's.
    pub partition_override: Option<u32>,
    /// When the record may be acked: `All` for plain messages and envelopes
    /// that name no policy, `Leader` when asked for (or when no ack is
    /// wanted at all, so the ISR size never refuses a fire-and-forget
    /// message).
    pub level: CommitLevel,
    /// How many of `record.headers` (the first ones) the bridge added
    /// itself (subject, reply); the rest came from the publisher and count
    /// against the header limits.
    pub bridge_headers: usize,
}

/// Converts a received NATS message into a record and its ack route.
pub fn ingest(
    subject: &str,
    reply: Option<&str>,
    nats_headers: Option<&async_nats::HeaderMap>,
    payload: Bytes,
    now: TimestampMs,
) -> Ingested {
    let mut headers = Vec::new();
    headers.push(Header {
        key: Bytes::from_static(SUBJECT_HEADER.as_bytes()),
        value: Some(Bytes::copy_from_slice(subject.as_bytes())),
    });
    if let Some(reply) = reply {
        headers.push(Header {
            key: Bytes::from_static(REPLY_HEADER.as_bytes()),
            value: Some(Bytes::copy_from_slice(reply.as_bytes())),
        });
    }
    let bridge_headers = headers.len();
    if let Some(map) = nats_headers {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, values) in map.iter() {
            for value in values {
                pairs.push((name.to_string(), value.as_str().to_string()));
            }
        }
        // HeaderMap iterates in hash order; sort for a stable record layout.
        pairs.sort();
        headers.extend(pairs.into_iter().map(|(k, v)| Header {
            key: Bytes::from(k),
            value: Some(Bytes::from(v)),
        }));
    }
    let envelope = if has_envelope_cookie(&payload) {
        let parsed = Envelope::decode_shared(&payload).ok();
        if parsed.is_none() {
            tracing::debug!(
                subject,
                "envelope cookie present but undecodable; storing plain"
            );
        }
        parsed
    } else {
        None
    };
    match envelope {
        Some(envelope) => {
            headers.extend(envelope.headers.into_iter().map(|h| Header {
                key: Bytes::from(h.key),
                value: h.value,
            }));
            let inbox = envelope.ack_inbox.or_else(|| reply.map(str::to_string));
            let wants_ack = envelope.ack_policy != Some(AckPolicy::None);
            let ack = inbox.filter(|_| wants_ack).map(|inbox| AckRoute {
                inbox,
                correlation_id: envelope.correlation_id,
            });
            let level = match (&ack, envelope.ack_policy) {
                (None, _) | (_, Some(AckPolicy::Leader)) => CommitLevel::Leader,
                _ => CommitLevel::All,
            };
            Ingested {
                record: Record {
                    timestamp: now,
                    key: envelope.key,
                    value: envelope.value,
                    headers,
                },
                ack,
                partition_override: envelope.partition,
                level,
                bridge_headers,
            }
        }
        None => Ingested {
            record: Record {
                timestamp: now,
                key: None,
                value: Some(payload),
                headers,
            },
            ack: reply.map(|inbox| AckRoute {
                inbox: inbox.to_string(),
                correlation_id: None,
            }),
            partition_override: None,
            level: if reply.is_some() {
                CommitLevel::All
            } else {
                CommitLevel::Leader
            },
            bridge_headers,
        },
    }
}

/// Which append an ack answers for: its partition and the node acking.
#[derive(Clone, Copy, Debug)]
pub struct AckContext<'a> {
    pub stream: &'a str,
    pub partition: u32,
    /// This node's id (the leader that committed the append).
    pub node: NodeId,
}

/// The ack payload for record `index` of an append.
pub fn ack_payload(
    context: AckContext<'_>,
    result: &Result<Committed, AppendFailure>,
    index: usize,
    route: &AckRoute,
    now: TimestampMs,
) -> Option<Vec<u8>> {
    let AckContext {
        stream,
        partition,
        node,
    } = context;
    let outcome = match result {
        Ok(committed) => AckOutcome::Committed {
            offset: committed.base_offset.plus(index as u64),
            commit_timestamp_ms: now,
            leader_epoch: Some(committed.leader_epoch),
        },
        Err(failure) => AckOutcome::Failed {
            code: failure.code,
            message: failure.message.clone(),
        },
    };
    let ack = Ack {
        stream: stream.to_string(),
        partition,
        correlation_id: route.correlation_id.clone(),
        ack_inbox: Some(route.inbox.clone()),
        node: Some(node),
        outcome,
    };
    match encode_ack(&ack) {
        Ok(payload) => Some(payload),
        Err(err) => {
            tracing::warn!(error = %err, "cannot encode ack");
            None
        }
    }
}

/// The NATS subject partition `partition` of a stream bound to `subject`
/// listens on: the subject itself for partition 0, `subject.i` otherwise.
pub fn partition_subject(subject: &str, partition: u32) -> String {
    if partition == 0 {
        subject.to_string()
    } else {
        format!("{subject}.{partition}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::nid;
    use crate::protocol::envelope::{encode_envelope, Header as EnvelopeHeader};
    use shards::types::Offset;

    fn header<'a>(record: &'a Record, key: &str) -> Option<&'a [u8]> {
        record
            .headers
            .iter()
            .find(|h| h.key.as_ref() == key.as_bytes())
            .and_then(|h| h.value.as_deref())
    }

    #[test]
    fn plain_message_keeps_subject_reply_and_headers() {
        let mut map = async_nats::HeaderMap::new();
        map.insert("trace", "abc");
        let ingested = ingest(
            "foo.a",
            Some("_INBOX.1"),
            Some(&map),
            Bytes::from_static(b"hi"),
            TimestampMs(5),
        );
        assert_eq!(ingested.record.value.as_deref(), Some(&b"hi"[..]));
        assert_eq!(ingested.record.key, None);
        assert_eq!(ingested.record.headers.len(), 3);
        assert_eq!(ingested.bridge_headers, 2, "subject and reply, not trace");
        assert_eq!(
            header(&ingested.record, SUBJECT_HEADER),
            Some(&b"foo.a"[..])
        );
        assert_eq!(
            header(&ingested.record, REPLY_HEADER),
            Some(&b"_INBOX.1"[..])
        );
        assert_eq!(header(&ingested.record, "trace"), Some(&b"abc"[..]));
        assert_eq!(ingested.ack.unwrap().inbox, "_INBOX.1");
    }

    #[test]
    fn no_reply_no_ack() {
        let ingested = ingest("foo", None, None, Bytes::from_static(b"x"), TimestampMs(0));
        assert!(ingested.ack.is_none());
    }

    #[test]
    fn envelope_is_taken_apart() {
        let envelope = Envelope {
            key: Some(Bytes::from_static(b"k")),
            headers: vec![EnvelopeHeader {
                key: "h".into(),
                value: Some(Bytes::from_static(b"v")),
            }],
            value: Some(Bytes::from_static(b"value")),
            ack_inbox: Some("acks.here".into()),
            correlation_id: Some("c-1".into()),
            ack_policy: Some(AckPolicy::Leader),
            partition: Some(2),
        };
        let payload = Bytes::from(encode_envelope(&envelope).unwrap());
        let ingested = ingest("foo", Some("_INBOX.2"), None, payload, TimestampMs(0));
        assert_eq!(ingested.record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(ingested.record.value.as_deref(), Some(&b"value"[..]));
        assert_eq!(header(&ingested.record, "h"), Some(&b"v"[..]));
        let ack = ingested.ack.unwrap();
        assert_eq!(ack.inbox, "acks.here");
        assert_eq!(ack.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(ingested.partition_override, Some(2));
    }

    #[test]
    fn envelope_with_ack_policy_none_gets_no_ack() {
        let envelope = Envelope {
            value: Some(Bytes::from_static(b"v")),
            ack_policy: Some(AckPolicy::None),
            ..Envelope::default()
        };
        let payload = Bytes::from(encode_envelope(&envelope).unwrap());
        assert!(ingest("foo", Some("r"), None, payload, TimestampMs(0))
            .ack
            .is_none());
    }

    #[test]
    fn undecodable_envelope_is_stored_plain() {
        let mut payload = crate::protocol::envelope::ENVELOPE_COOKIE.to_vec();
        payload.extend_from_slice(b"garbage that is not a flatbuffer");
        let payload = Bytes::from(payload);
        let ingested = ingest("foo", Some("r"), None, payload.clone(), TimestampMs(0));
        assert_eq!(ingested.record.value, Some(payload));
        assert!(ingested.ack.is_some());
    }

    #[test]
    fn ack_round_trip() {
        let route = AckRoute {
            inbox: "in".into(),
            correlation_id: Some("c".into()),
        };
        let context = AckContext {
            stream: "s",
            partition: 1,
            node: nid(2),
        };
        let committed = Committed {
            base_offset: Offset(10),
            leader_epoch: 5,
        };
        let payload = ack_payload(context, &Ok(committed), 3, &route, TimestampMs(7)).unwrap();
        let ack = Ack::decode(&payload).unwrap();
        assert_eq!(ack.stream, "s");
        assert_eq!(
            ack.outcome,
            AckOutcome::Committed {
                offset: Offset(13),
                commit_timestamp_ms: TimestampMs(7),
                leader_epoch: Some(5),
            }
        );
        assert_eq!(ack.node, Some(nid(2)));
    }

    #[test]
    fn partition_subjects() {
        assert_eq!(partition_subject("orders", 0), "orders");
        assert_eq!(partition_subject("orders.*", 3), "orders.*.3");
    }
}
