//! Sparkplug B (Eclipse Sparkplug 3.0, `spBv1.0` topics): the protobuf payload decoded with
//! `srad-types` (prost types generated from the specification's `sparkplug_b.proto`), metric
//! aliases resolved from the BIRTH messages, and the normalised form functions can receive.

use std::collections::HashMap;
use std::sync::Mutex;

use ciborium::Value;
use srad_types::payload::{metric, DataType, Message, Metric, Payload};

/// Aliases remembered at most, over every edge node (what is over is counted, and those
/// metrics arrive without a name).
pub const MAX_ALIASES: usize = 65_536;

/// Decodes `payload` as a Sparkplug B payload.
pub fn decode(payload: &[u8]) -> Result<Payload, String> {
    let p = Payload::decode(payload).map_err(|e| format!("not a Sparkplug B payload: {e}"))?;
    if p.timestamp.is_none() && p.metrics.is_empty() && p.seq.is_none() {
        return Err("not a Sparkplug B payload: no timestamp, sequence number or metric".into());
    }
    Ok(p)
}

/// Where a Sparkplug message comes from, from its topic:
/// `spBv1.0/<group>/<message type>/<edge node>[/<device>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The group id.
    pub group: String,
    /// NBIRTH, NDATA, NDEATH, DBIRTH, DDATA, DDEATH, NCMD, DCMD.
    pub message_type: String,
    /// The edge node id.
    pub edge_node: String,
    /// The device id, for device messages.
    pub device: Option<String>,
}

impl Origin {
    /// The origin of a message on `topic`, if the topic is in the Sparkplug B namespace.
    pub fn of(topic: &str) -> Option<Origin> {
        let mut parts = topic.split('/');
        if parts.next()? != "spBv1.0" {
            return None;
        }
        let group = parts.next()?.to_string();
        let message_type = parts.next()?.to_string();
        let edge_node = parts.next()?.to_string();
        let device = parts.next().map(str::to_string);
        if parts.next().is_some() {
            return None;
        }
        Some(Origin {
            group,
            message_type,
            edge_node,
            device,
        })
    }
}

/// Metric names by alias, per edge node, learned from NBIRTH and DBIRTH messages (aliases
/// are unique within an edge node). Bounded by [`MAX_ALIASES`].
#[derive(Debug, Default)]
pub struct Aliases {
    nodes: Mutex<AliasBook>,
}

#[derive(Debug, Default)]
struct AliasBook {
    by_node: HashMap<(String, String), HashMap<u64, String>>,
    total: usize,
}

impl Aliases {
    /// Learns the aliases a BIRTH declares (an NBIRTH starts the edge node afresh), and
    /// fills in the names of metrics that carry only an alias.
    fn resolve(&self, origin: Option<&Origin>, metrics: &mut [Metric]) {
        let Some(o) = origin else {
            return;
        };
        let mut book = self.nodes.lock().expect("aliases lock");
        let book = &mut *book;
        let key = (o.group.clone(), o.edge_node.clone());
        if o.message_type == "NBIRTH" {
            if let Some(old) = book.by_node.remove(&key) {
                book.total -= old.len();
            }
        }
        if o.message_type.ends_with("BIRTH") {
            let node = book.by_node.entry(key.clone()).or_default();
            for m in metrics.iter() {
                if let (Some(alias), Some(name)) = (m.alias, &m.name) {
                    if book.total >= MAX_ALIASES && !node.contains_key(&alias) {
                        metrics::counter!("kiri_sparkplug_aliases_dropped_total").increment(1);
                        continue;
                    }
                    if node.insert(alias, name.clone()).is_none() {
                        book.total += 1;
                    }
                }
            }
        }
        if let Some(node) = book.by_node.get(&key) {
            for m in metrics.iter_mut() {
                if m.name.is_none() {
                    if let Some(name) = m.alias.and_then(|a| node.get(&a)) {
                        m.name = Some(name.clone());
                    }
                }
            }
        }
    }
}

/// The normalised form of a Sparkplug B message on `topic`, as a CBOR value: its origin,
/// timestamp, sequence number and metrics, each metric with its name (resolved from the
/// BIRTH when the message carries only the alias), alias, timestamp, datatype name and value.
pub fn normalise(topic: &str, payload: &[u8], aliases: &Aliases) -> Result<Value, String> {
    let mut p = decode(payload)?;
    let origin = Origin::of(topic);
    aliases.resolve(origin.as_ref(), &mut p.metrics);
    let text = |s: &str| Value::Text(s.to_string());
    let mut out = Vec::new();
    if let Some(o) = &origin {
        out.push((text("message_type"), text(&o.message_type)));
        out.push((text("group"), text(&o.group)));
        out.push((text("edge_node"), text(&o.edge_node)));
        if let Some(d) = &o.device {
            out.push((text("device"), text(d)));
        }
    }
    if let Some(ts) = p.timestamp {
        out.push((text("timestamp"), Value::Integer(ts.into())));
    }
    if let Some(seq) = p.seq {
        out.push((text("seq"), Value::Integer(seq.into())));
    }
    let metrics = p.metrics.iter().map(metric_value).collect();
    out.push((text("metrics"), Value::Array(metrics)));
    Ok(Value::Map(out))
}

fn metric_value(m: &Metric) -> Value {
    let text = |s: &str| Value::Text(s.to_string());
    let datatype = m
        .datatype
        .and_then(|d| DataType::try_from(d as i32).ok())
        .unwrap_or(DataType::Unknown);
    let mut out = vec![(text("name"), m.name.as_deref().map_or(Value::Null, text))];
    if let Some(alias) = m.alias {
        out.push((text("alias"), Value::Integer(alias.into())));
    }
    if let Some(ts) = m.timestamp {
        out.push((text("timestamp"), Value::Integer(ts.into())));
    }
    out.push((text("datatype"), text(datatype.as_str_name())));
    let value = if m.is_null == Some(true) {
        Value::Null
    } else {
        value_of(datatype, m.value.as_ref())
    };
    out.push((text("value"), value));
    Value::Map(out)
}

/// A metric's value as its datatype says: the 32-bit field carries Int8 to Int32 as two's
/// complement, the 64-bit one Int64 the same way.
fn value_of(datatype: DataType, v: Option<&metric::Value>) -> Value {
    use metric::Value as V;
    let Some(v) = v else {
        return Value::Null;
    };
    match (datatype, v) {
        (DataType::Int8, V::IntValue(i)) => Value::Integer((*i as u8 as i8).into()),
        (DataType::Int16, V::IntValue(i)) => Value::Integer((*i as u16 as i16).into()),
        (DataType::Int32, V::IntValue(i)) => Value::Integer((*i as i32).into()),
        (DataType::Int64, V::LongValue(i)) => Value::Integer((*i as i64).into()),
        (_, V::IntValue(i)) => Value::Integer((*i).into()),
        (_, V::LongValue(i)) => Value::Integer((*i).into()),
        (_, V::FloatValue(f)) => Value::Float(f64::from(*f)),
        (_, V::DoubleValue(f)) => Value::Float(*f),
        (_, V::BooleanValue(b)) => Value::Bool(*b),
        (_, V::StringValue(s)) => Value::Text(s.clone()),
        (_, V::BytesValue(b)) => Value::Bytes(b.clone()),
        // Data sets, templates and extensions are not decoded (yet): no value.
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use srad_types::payload::Payload;

    fn metric(name: Option<&str>, alias: u64, datatype: DataType, v: metric::Value) -> Metric {
        Metric {
            name: name.map(str::to_string),
            alias: Some(alias),
            datatype: Some(datatype as u32),
            value: Some(v),
            ..Metric::default()
        }
    }

    fn payload(seq: u64, metrics: Vec<Metric>) -> Vec<u8> {
        Payload {
            timestamp: Some(1_700_000_000_000),
            seq: Some(seq),
            metrics,
            ..Payload::default()
        }
        .encode_to_vec()
    }

    fn field<'v>(v: &'v Value, key: &str) -> &'v Value {
        match v {
            Value::Map(m) => {
                &m.iter()
                    .find(|(k, _)| k == &Value::Text(key.into()))
                    .unwrap()
                    .1
            }
            _ => panic!("not a map: {v:?}"),
        }
    }

    #[test]
    fn data_metrics_get_their_names_from_the_birth_and_signed_ints_keep_their_sign() {
        let aliases = Aliases::default();
        let birth = payload(
            0,
            vec![
                metric(
                    Some("Temperature"),
                    1,
                    DataType::Double,
                    metric::Value::DoubleValue(21.5),
                ),
                metric(
                    Some("Offset"),
                    2,
                    DataType::Int8,
                    metric::Value::IntValue(0xff),
                ),
            ],
        );
        let b = normalise("spBv1.0/plant/NBIRTH/line1", &birth, &aliases).unwrap();
        assert_eq!(field(&b, "message_type"), &Value::Text("NBIRTH".into()));
        let data = payload(
            1,
            vec![
                metric(None, 1, DataType::Double, metric::Value::DoubleValue(21.75)),
                metric(None, 2, DataType::Int8, metric::Value::IntValue(0xfe)),
                metric(None, 9, DataType::UInt32, metric::Value::IntValue(7)),
            ],
        );
        let d = normalise("spBv1.0/plant/DDATA/line1/meter", &data, &aliases).unwrap();
        assert_eq!(field(&d, "device"), &Value::Text("meter".into()));
        let Value::Array(metrics) = field(&d, "metrics") else {
            panic!("metrics")
        };
        assert_eq!(
            field(&metrics[0], "name"),
            &Value::Text("Temperature".into())
        );
        assert_eq!(field(&metrics[1], "value"), &Value::Integer((-2).into()));
        assert_eq!(
            field(&metrics[2], "name"),
            &Value::Null,
            "an alias no birth named"
        );
        // Another edge node's aliases are its own.
        let other = normalise("spBv1.0/plant/NDATA/line2", &data, &aliases).unwrap();
        let Value::Array(metrics) = field(&other, "metrics") else {
            panic!("metrics")
        };
        assert_eq!(field(&metrics[0], "name"), &Value::Null);
    }

    #[test]
    fn truncated_digits_and_empty_payloads_are_not_sparkplug() {
        let good = payload(
            3,
            vec![metric(
                Some("t"),
                1,
                DataType::Float,
                metric::Value::FloatValue(1.0),
            )],
        );
        assert!(decode(&good).is_ok());
        assert!(decode(&good[..good.len() - 3]).is_err());
        assert!(decode(b"7").is_err());
        assert!(decode(b"").is_err());
        assert!(decode(br#"{"temperature":21.5}"#).is_err());
    }

    #[test]
    fn topics_outside_the_namespace_have_no_origin() {
        assert_eq!(Origin::of("zigbee2mqtt/living_room"), None);
        let o = Origin::of("spBv1.0/g/NDATA/e").unwrap();
        assert_eq!((o.group.as_str(), o.device), ("g", None));
    }
}
