//! Results as CloudEvents 1.0 in the structured JSON format (`cloud.encoding =
//! "cloudevents"`): one event per message, or a JSON array of events for a batch
//! (`application/cloudevents-batch+json`). The mapping is in `docs/payload-formats.md`.

use base64ct::Encoding as _;
use serde_json::{json, Map, Value};

use super::UplinkConfig;
use crate::outbox::Record;

/// The `type` of every result event.
pub const EVENT_TYPE: &str = "io.kiri.result";

/// The topic and payload of the message carrying `records`.
pub fn message(cfg: &UplinkConfig, records: &[Record]) -> (String, Vec<u8>) {
    if cfg.batch_records <= 1 {
        let r = &records[0];
        let topic = format!("{}/{}", cfg.topic_prefix, r.topic);
        (topic, event(cfg, r).to_string().into_bytes())
    } else {
        let events: Vec<Value> = records.iter().map(|r| event(cfg, r)).collect();
        let topic = format!("{}/$batch", cfg.topic_prefix);
        (topic, Value::Array(events).to_string().into_bytes())
    }
}

/// One result as a CloudEvent. Its payload goes as `data` when it is JSON (as the JSON
/// value) or CBOR (converted to JSON), as `data` text when it is other UTF-8 text, and as
/// `data_base64` otherwise.
pub fn event(cfg: &UplinkConfig, r: &Record) -> Value {
    let mut e = Map::new();
    e.insert("specversion".into(), json!("1.0"));
    e.insert(
        "id".into(),
        json!(format!("{:016x}-{}", cfg.store_id, r.seq)),
    );
    e.insert(
        "source".into(),
        json!(format!("/kiri/{}/{}", cfg.gateway, r.function)),
    );
    e.insert("type".into(), json!(EVENT_TYPE));
    e.insert("subject".into(), json!(r.topic));
    if let Some(time) = chrono::DateTime::from_timestamp_millis(r.created_ms as i64) {
        e.insert(
            "time".into(),
            json!(time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
    }
    e.insert("kirigateway".into(), json!(cfg.gateway));
    e.insert("kirifunction".into(), json!(r.function));
    e.insert("kiriseq".into(), json!(r.seq));
    let (content_type, data) = data(&r.payload);
    e.insert("datacontenttype".into(), json!(content_type));
    match data {
        Data::Value(v) => e.insert("data".into(), v),
        Data::Base64(b) => e.insert("data_base64".into(), json!(b)),
    };
    Value::Object(e)
}

enum Data {
    Value(Value),
    Base64(String),
}

/// What the payload is, and how it goes in the event.
fn data(payload: &[u8]) -> (&'static str, Data) {
    use crate::formats::View;
    match crate::formats::view(payload) {
        View::Json(v) => ("application/json", Data::Value(v)),
        View::Text(text) => ("text/plain; charset=utf-8", Data::Value(json!(text))),
        View::Binary => (
            "application/octet-stream",
            Data::Base64(base64ct::Base64::encode_string(payload)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Priority;

    fn cfg(batch_records: usize) -> UplinkConfig {
        UplinkConfig {
            batch_records,
            encoding: crate::config::Encoding::Cloudevents,
            ..crate::uplink::tests::config()
        }
    }

    fn record(payload: &[u8]) -> Record {
        Record {
            seq: 7,
            priority: Priority::Normal,
            created_ms: 1_700_000_000_123,
            held_ms: Some(1),
            function: "convert".into(),
            topic: "readings/s1".into(),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn a_cbor_result_becomes_a_cloudevent_with_json_data() {
        let mut cbor = Vec::new();
        ciborium::ser::into_writer(&json!({"sensor": "s1", "value": 70.7}), &mut cbor).unwrap();
        let (topic, payload) = message(&cfg(1), &[record(&cbor)]);
        assert_eq!(topic, "kiri/gw/readings/s1");
        let e: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["id"], "0000000000000abc-7");
        assert_eq!(e["source"], "/kiri/gw/convert");
        assert_eq!(e["type"], EVENT_TYPE);
        assert_eq!(e["subject"], "readings/s1");
        assert_eq!(e["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["data"], json!({"sensor": "s1", "value": 70.7}));
        assert_eq!(
            (e["kiriseq"].as_u64(), &e["kirifunction"]),
            (Some(7), &json!("convert"))
        );
    }

    #[test]
    fn text_goes_as_text_and_bytes_as_base64_and_batches_as_an_array() {
        let e = event(&cfg(1), &record(b"ON"));
        assert_eq!(e["datacontenttype"], "text/plain; charset=utf-8");
        assert_eq!(e["data"], "ON");
        let e = event(&cfg(1), &record(&[0xff, 0x00]));
        assert_eq!(e["datacontenttype"], "application/octet-stream");
        assert_eq!(e["data_base64"], "/wA=");
        assert!(e.get("data").is_none());
        let (topic, payload) = message(&cfg(8), &[record(b"1"), record(b"2")]);
        assert_eq!(topic, "kiri/gw/$batch");
        let batch: Vec<Value> = serde_json::from_slice(&payload).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[1]["data"], 2);
    }
}
