//! What a message to the cloud carries, in each `cloud.encoding`: Kiri's CBOR envelope,
//! CloudEvents, or (MQTT 5) the raw payload with its metadata in user properties; and the
//! MQTT 5 properties every message gets (content type, payload format, expiry from
//! `outbox.ttl`). The mapping is in `docs/payload-formats.md`.

use super::cloudevents;
use super::link::{Message, Props};
use super::{Envelope, UplinkConfig};
use crate::config::Encoding;
use crate::outbox::Record;

/// The id of a record as consumers see it: unique per data directory.
pub fn record_id(cfg: &UplinkConfig, r: &Record) -> String {
    format!("{:016x}-{}", cfg.store_id, r.seq)
}

/// A record in Kiri's CBOR envelope.
pub fn envelope(cfg: &UplinkConfig, r: &Record) -> Envelope {
    Envelope {
        id: record_id(cfg, r),
        gateway: cfg.gateway.clone(),
        seq: r.seq,
        function: r.function.clone(),
        topic: r.topic.clone(),
        ts: r.created_ms,
        payload: r.payload.clone(),
    }
}

/// The message carrying `records`: one result, or a batch when `batch_records` > 1 (never in
/// the raw encoding, which the configuration check refuses). `held_ms`: how long the oldest
/// of them has been held ([`crate::outbox::Outbox::held_for`]), for the message expiry.
pub fn message(cfg: &UplinkConfig, records: &[Record], held_ms: u64) -> Message {
    let batch = cfg.batch_records > 1;
    let (topic, payload, props) = match cfg.encoding {
        Encoding::Cloudevents => {
            let (topic, payload) = cloudevents::message(cfg, records);
            let content_type = if batch {
                "application/cloudevents-batch+json"
            } else {
                "application/cloudevents+json"
            };
            (topic, payload, props(content_type, true))
        }
        Encoding::Cbor if batch => {
            let envelopes: Vec<Envelope> = records.iter().map(|r| envelope(cfg, r)).collect();
            let topic = format!("{}/$batch", cfg.topic_prefix);
            let payload = Envelope::encode_batch(&cfg.gateway, &envelopes);
            (topic, payload, props("application/cbor", false))
        }
        Encoding::Cbor => {
            let r = &records[0];
            let topic = format!("{}/{}", cfg.topic_prefix, r.topic);
            (
                topic,
                envelope(cfg, r).encode(),
                props("application/cbor", false),
            )
        }
        Encoding::Raw => {
            let r = &records[0];
            let topic = format!("{}/{}", cfg.topic_prefix, r.topic);
            let (content_type, utf8) = crate::formats::content_type(&r.payload);
            let mut props = props(content_type, utf8);
            props.user = vec![
                ("id".into(), record_id(cfg, r)),
                ("seq".into(), r.seq.to_string()),
                ("function".into(), r.function.clone()),
                ("gateway".into(), cfg.gateway.clone()),
                ("content_type".into(), content_type.into()),
                ("ts".into(), r.created_ms.to_string()),
            ];
            (topic, r.payload.clone(), props)
        }
    };
    // MQTT 3.1.1 has no properties: nothing to work out per message.
    if cfg.protocol != crate::config::MqttVersion::V5 {
        return Message {
            topic,
            payload,
            props: Props::default(),
        };
    }
    let expiry_secs = cfg.ttl.map(|ttl| expiry(ttl.as_millis() as u64, held_ms));
    Message {
        topic,
        payload,
        props: Props {
            expiry_secs,
            ..props
        },
    }
}

fn props(content_type: &str, utf8: bool) -> Props {
    Props {
        content_type: Some(content_type.into()),
        utf8,
        ..Props::default()
    }
}

/// The message expiry interval of a message under `outbox.ttl = ttl_ms` whose oldest record
/// has been held `held_ms`: what is left of its time to live, in whole seconds, at least 1
/// (the outbox never sends what has expired).
fn expiry(ttl_ms: u64, held_ms: u64) -> u32 {
    let left_ms = ttl_ms.saturating_sub(held_ms);
    (left_ms / 1000).clamp(1, u32::MAX as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Priority;

    fn cfg(encoding: Encoding, ttl: Option<std::time::Duration>) -> UplinkConfig {
        UplinkConfig {
            encoding,
            ttl,
            protocol: crate::config::MqttVersion::V5,
            ..super::super::tests::config()
        }
    }

    fn record(payload: &[u8], created_ms: u64) -> Record {
        Record {
            seq: 7,
            priority: Priority::Normal,
            created_ms,
            held_ms: Some(1),
            function: "f".into(),
            topic: "t/x".into(),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn raw_messages_carry_the_payload_as_emitted_and_say_what_it_is() {
        let c = cfg(Encoding::Raw, None);
        let m = message(&c, &[record(br#"{"t":21.5}"#, 1)], 0);
        assert_eq!(m.topic, "kiri/gw/t/x");
        assert_eq!(m.payload, br#"{"t":21.5}"#);
        assert_eq!(m.props.content_type.as_deref(), Some("application/json"));
        assert!(m.props.utf8);
        assert_eq!(m.props.expiry_secs, None);
        let user: std::collections::HashMap<_, _> = m.props.user.iter().cloned().collect();
        assert_eq!(user["id"], "0000000000000abc-7");
        assert_eq!(user["seq"], "7");
        assert_eq!(user["function"], "f");
        assert_eq!(user["gateway"], "gw");
        assert_eq!(user["content_type"], "application/json");
        let cbor = message(&c, &[record(&[0xa1, 0x61, 0x74, 0x01], 1)], 0);
        assert_eq!(cbor.props.content_type.as_deref(), Some("application/cbor"));
        assert!(!cbor.props.utf8);
        let bytes = message(&c, &[record(&[0xff, 0x00], 1)], 0);
        assert_eq!(
            bytes.props.content_type.as_deref(),
            Some("application/octet-stream")
        );
        let text = message(&c, &[record(b"ON", 1)], 0);
        assert_eq!(
            text.props.content_type.as_deref(),
            Some("text/plain; charset=utf-8")
        );
    }

    #[test]
    fn envelopes_say_their_content_type() {
        let m = message(&cfg(Encoding::Cbor, None), &[record(b"x", 1)], 0);
        assert_eq!(m.props.content_type.as_deref(), Some("application/cbor"));
        assert!(m.props.user.is_empty());
        let m = message(&cfg(Encoding::Cloudevents, None), &[record(b"x", 1)], 0);
        assert_eq!(
            m.props.content_type.as_deref(),
            Some("application/cloudevents+json")
        );
        assert!(m.props.utf8);
    }

    #[test]
    fn mqtt_3_1_1_messages_carry_no_properties() {
        let c = UplinkConfig {
            protocol: crate::config::MqttVersion::V311,
            ..cfg(Encoding::Cbor, Some(std::time::Duration::from_secs(60)))
        };
        assert_eq!(message(&c, &[record(b"x", 1)], 0).props, Props::default());
    }

    #[test]
    fn expiry_is_what_is_left_of_the_oldest_records_ttl() {
        let c = cfg(Encoding::Cbor, Some(std::time::Duration::from_secs(3600)));
        let m = message(&c, &[record(b"x", 1)], 600_000);
        assert_eq!(m.props.expiry_secs, Some(3000));
        // Already due (the read deletes such records; one racing the clock still gets 1 s).
        assert_eq!(expiry(1000, 5000), 1);
        assert_eq!(expiry(3_600_000, 1_000_500), 2599);
    }
}
