//! The NATS ingest path on arbitrary payloads: envelope decoding (cookie +
//! flatbuffer), the bridge's `ingest`, the record batch it becomes, and the
//! ack decoder clients run on what comes back.
//!
//! Properties: never panics; a payload that decodes as an envelope
//! re-encodes and decodes to the same envelope; `ingest` never drops a
//! message (an undecodable envelope is stored whole as the value); the record
//! it builds encodes to a batch the log accepts.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shards::batch::{encode_batch, validate_records};
use shards::types::{Offset, TimestampMs};
use sluice::control::bridge::ingest;
use sluice::protocol::ack::{Ack, ACK_COOKIE};
use sluice::protocol::envelope::{encode_envelope, Envelope, ENVELOPE_COOKIE};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    // Most inputs get the cookie so the flatbuffer verifier is what is fuzzed.
    let payload = match mode % 4 {
        0 => body.to_vec(),
        _ => [&ENVELOPE_COOKIE[..], body].concat(),
    };
    let payload = Bytes::from(payload);

    let decoded = Envelope::decode(&payload);
    let shared = Envelope::decode_shared(&payload);
    assert_eq!(decoded.is_ok(), shared.is_ok());
    if let (Ok(envelope), Ok(shared)) = (&decoded, &shared) {
        assert_eq!(envelope, shared, "copying and zero-copy decoding must agree");
        if let Ok(encoded) = encode_envelope(envelope) {
            let again = Envelope::decode(&encoded).expect("an encoded envelope decodes");
            assert_eq!(&again, envelope, "envelope round trip");
        }
    }

    let reply = (mode & 0x10 != 0).then_some("_INBOX.fuzz");
    let ingested = ingest("orders.eu", reply, None, payload.clone(), TimestampMs(1_700_000_000_000));
    match &decoded {
        Ok(envelope) => {
            assert_eq!(ingested.record.value, envelope.value);
            assert_eq!(ingested.record.key, envelope.key);
            assert_eq!(ingested.partition_override, envelope.partition);
        }
        Err(_) => {
            assert_eq!(ingested.record.value.as_ref(), Some(&payload), "never dropped");
            assert_eq!(ingested.record.key, None);
        }
    }
    let mut batch = Vec::new();
    encode_batch(Offset::ZERO, std::slice::from_ref(&ingested.record), &mut batch);
    validate_records(&batch).expect("an ingested record encodes to a valid batch");

    // The same bytes as an ack, as a publisher's client would decode them.
    let ack_payload = [&ACK_COOKIE[..], body].concat();
    if let Ok(ack) = Ack::decode(&ack_payload) {
        std::hint::black_box(ack);
    }
});
