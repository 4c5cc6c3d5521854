//! `devices`: one Kiri reading per quantity from the payloads real devices publish. Config
//! `source` says whose: `zigbee2mqtt`, `tasmota`, `shelly`, `statestream` (ESPHome and Home
//! Assistant's MQTT statestream: a number as text, the quantity in the topic) or `sparkplug`.
//! JSON and Sparkplug B arrive converted to CBOR (`deliver = "cbor"`), numbers as text as
//! text (`format = "text"`); see `docs/payload-formats.md` for the configuration of each.
//!
//! Each reading goes to `readings/<sensor>/<kind>` in the reading format every other example
//! understands. Quantities it does not know are left out; a payload of the wrong shape fails
//! the invocation with code 1.
#![cfg_attr(target_arch = "wasm32", no_std)]

use core::fmt::Write;
use kiri_sdk::{Error, Event, Level, LineBuf, Reading};
use minicbor::data::Type;
use minicbor::Decoder;

/// The payload is not what the configured source publishes.
pub const WRONG_SHAPE: Error = Error::new(1);
/// `source` is not set to a known source.
pub const NO_SOURCE: Error = Error::new(2);

type Decoded<T> = Result<T, minicbor::decode::Error>;

/// The quantities this function knows: a field name (lowercase), the reading's kind, and
/// the unit the devices send it in (overridable per source).
const QUANTITIES: [(&str, &str, &str); 11] = [
    ("temperature", "temperature", "C"),
    ("humidity", "humidity", "%RH"),
    ("pressure", "pressure", "hPa"),
    ("illuminance", "illuminance", "lx"),
    ("illuminance_lux", "illuminance", "lx"),
    ("co2", "co2", "ppm"),
    ("battery", "battery", "%"),
    ("voltage", "voltage", "V"),
    ("current", "current", "A"),
    ("power", "power", "W"),
    ("energy", "energy", "kWh"),
];

fn quantity(field: &str) -> Option<(&'static str, &'static str)> {
    QUANTITIES
        .iter()
        .find(|(f, _, _)| field.eq_ignore_ascii_case(f))
        .map(|&(_, kind, unit)| (kind, unit))
}

/// Emits one reading.
fn emit(sensor: &str, kind: &str, value: f64, unit: &str, ts: Option<u64>) -> Result<(), Error> {
    let r = Reading {
        sensor,
        kind,
        value,
        unit,
        ts,
        uptime_ms: None,
        seq: None,
    };
    let mut buf = [0u8; 256];
    let n = r.encode(&mut buf).map_err(|_| WRONG_SHAPE)?;
    let mut topic = LineBuf::new();
    topic.push("readings/").push(sensor).push("/").push(kind);
    kiri_sdk::emit(topic.as_str(), &buf[..n])
}

/// A number, if the next item is one (it is consumed either way).
fn number(d: &mut Decoder<'_>) -> Decoded<Option<f64>> {
    Ok(Some(match d.datatype()? {
        Type::F16 | Type::F32 | Type::F64 => d.f64()?,
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => d.u64()? as f64,
        Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => {
            i64::try_from(d.int()?).map_or(f64::NAN, |i| i as f64)
        }
        _ => {
            d.skip()?;
            return Ok(None);
        }
    }))
}

/// Calls `f` with each key of the map at the decoder (text keys; others are skipped).
fn each_entry<'b>(
    d: &mut Decoder<'b>,
    mut f: impl FnMut(&'b str, &mut Decoder<'b>) -> Result<(), Fail>,
) -> Result<(), Fail> {
    let len = d.map()?.ok_or(Fail::Shape)?;
    for _ in 0..len {
        if d.datatype()? == Type::String {
            let key = d.str()?;
            f(key, d)?;
        } else {
            d.skip()?;
            d.skip()?;
        }
    }
    Ok(())
}

/// Why a payload was not taken.
#[derive(Debug)]
enum Fail {
    Shape,
    Emit(Error),
}

impl From<minicbor::decode::Error> for Fail {
    fn from(_: minicbor::decode::Error) -> Fail {
        Fail::Shape
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::Emit(e)
    }
}

/// Zigbee2MQTT: `zigbee2mqtt/<friendly name>`, one JSON object of the device's quantities.
/// Voltage comes in mV.
fn zigbee2mqtt(topic: &str, payload: &[u8]) -> Result<(), Fail> {
    let name = topic.split_once('/').map_or(topic, |(_, n)| n);
    let mut d = Decoder::new(payload);
    each_entry(&mut d, |key, d| {
        let value = number(d)?;
        if let (Some(v), Some((kind, unit))) = (value, quantity(key)) {
            let unit = if kind == "voltage" { "mV" } else { unit };
            emit(name, kind, v, unit, None)?;
        }
        Ok(())
    })
}

/// Tasmota: `tele/<device>/SENSOR`, `{"Time": ..., "<sensor>": {"Temperature": ...}, ...,
/// "TempUnit": "C", "PressureUnit": "hPa"}`.
fn tasmota(topic: &str, payload: &[u8]) -> Result<(), Fail> {
    let device = topic.split('/').nth(1).ok_or(Fail::Shape)?;
    // The units may come after the sensors: read them first.
    let (mut temp_unit, mut pressure_unit) = ("C", "hPa");
    let mut d = Decoder::new(payload);
    each_entry(&mut d, |key, d| {
        match (key, d.datatype()?) {
            ("TempUnit", Type::String) => temp_unit = d.str()?,
            ("PressureUnit", Type::String) => pressure_unit = d.str()?,
            _ => d.skip()?,
        }
        Ok(())
    })?;
    let mut d = Decoder::new(payload);
    each_entry(&mut d, |sensor, d| {
        if d.datatype()? != Type::Map {
            d.skip()?;
            return Ok(());
        }
        let mut id = LineBuf::new();
        id.push(device).push("/").push(sensor);
        each_entry(d, |key, d| {
            let value = number(d)?;
            let key = if key == "Total" { "energy" } else { key };
            if let (Some(v), Some((kind, unit))) = (value, quantity(key)) {
                let unit = match kind {
                    "temperature" => temp_unit,
                    "pressure" => pressure_unit,
                    _ => unit,
                };
                emit(id.as_str(), kind, v, unit, None)?;
            }
            Ok(())
        })
    })
}

/// Shelly Gen2: `<device id>/events/rpc`, a JSON-RPC notification `{"src": ..., "method":
/// "NotifyStatus", "params": {"ts": <s>, "temperature:0": {"tC": ...}, "humidity:0": {"rh":
/// ...}, "switch:0": {"apower": ..., "voltage": ..., "current": ...}}}`.
fn shelly(payload: &[u8]) -> Result<(), Fail> {
    let (mut src, mut method, mut ts) = ("", "", None);
    let mut d = Decoder::new(payload);
    each_entry(&mut d, |key, d| {
        match key {
            "src" => src = d.str()?,
            "method" => method = d.str()?,
            "params" => each_entry(d, |k, d| {
                if k == "ts" {
                    ts = number(d)?.map(|s| (s * 1000.0) as u64);
                } else {
                    d.skip()?;
                }
                Ok(())
            })?,
            _ => d.skip()?,
        }
        Ok(())
    })?;
    if !method.starts_with("Notify") {
        // Other RPC traffic on the topic (answers, events): nothing to read.
        return Ok(());
    }
    let mut d = Decoder::new(payload);
    each_entry(&mut d, |key, d| {
        if key != "params" {
            d.skip()?;
            return Ok(());
        }
        each_entry(d, |component, d| {
            if d.datatype()? != Type::Map {
                d.skip()?;
                return Ok(());
            }
            let mut id = LineBuf::new();
            id.push(src).push("/").push(component);
            each_entry(d, |field, d| {
                let value = number(d)?;
                let reading = match field {
                    "tC" => Some(("temperature", "C")),
                    "rh" => Some(("humidity", "%RH")),
                    "apower" => Some(("power", "W")),
                    "voltage" => Some(("voltage", "V")),
                    "current" => Some(("current", "A")),
                    _ => None,
                };
                if let (Some(v), Some((kind, unit))) = (value, reading) {
                    emit(id.as_str(), kind, v, unit, ts)?;
                }
                Ok(())
            })
        })
    })
}

/// ESPHome (`<node>/sensor/<name>/state`) and Home Assistant's MQTT statestream
/// (`<base>/sensor/<entity>/state`, values JSON-quoted): a number as text; the kind is the
/// known quantity the name ends with (`living_room_temperature`), the unit its usual one
/// unless `unit` is configured.
fn statestream(topic: &str, payload: &[u8]) -> Result<(), Fail> {
    let mut parts = topic.rsplit('/');
    let (Some("state"), Some(name)) = (parts.next(), parts.next()) else {
        return Err(Fail::Shape);
    };
    let text = core::str::from_utf8(payload).map_err(|_| Fail::Shape)?;
    let Ok(value) = text.trim().trim_matches('"').parse::<f64>() else {
        // `on`, `unavailable`: not a measurement.
        return Ok(());
    };
    let known = name
        .rsplit(['_', '-'])
        .find_map(quantity)
        .or_else(|| quantity(name));
    let Some((kind, default_unit)) = known else {
        return Ok(());
    };
    let mut unit_buf = [0u8; 16];
    let unit = kiri_sdk::config("unit", &mut unit_buf).unwrap_or(default_unit);
    emit(name, kind, value, unit, None)?;
    Ok(())
}

/// Sparkplug B, normalised by the gateway: each metric with a name and a numeric value is a
/// reading of kind `<metric name>` from sensor `<edge node>[/<device>]`, with no unit.
fn sparkplug(payload: &[u8]) -> Result<(), Fail> {
    let (mut node, mut device) = ("", None);
    let mut d = Decoder::new(payload);
    each_entry(&mut d, |key, d| {
        match key {
            "edge_node" => node = d.str()?,
            "device" => device = Some(d.str()?),
            _ => d.skip()?,
        }
        Ok(())
    })?;
    let mut sensor = LineBuf::new();
    let _ = match device {
        Some(dev) => write!(sensor, "{node}/{dev}"),
        None => write!(sensor, "{node}"),
    };
    let mut d = Decoder::new(payload);
    each_entry(&mut d, |key, d| {
        if key != "metrics" {
            d.skip()?;
            return Ok(());
        }
        let len = d.array()?.ok_or(Fail::Shape)?;
        for _ in 0..len {
            let (mut name, mut value, mut ts) = (None, None, None);
            each_entry(d, |field, d| {
                match (field, d.datatype()?) {
                    ("name", Type::String) => name = Some(d.str()?),
                    ("value", _) => value = number(d)?,
                    ("timestamp", _) => ts = number(d)?.map(|t| t as u64),
                    _ => d.skip()?,
                }
                Ok(())
            })?;
            if let (Some(name), Some(v)) = (name, value) {
                emit(sensor.as_str(), name, v, "", ts)?;
            }
        }
        Ok(())
    })
}

fn on_event(event: &Event) -> Result<(), Error> {
    let mut buf = [0u8; 16];
    let source = kiri_sdk::config("source", &mut buf).ok_or(NO_SOURCE)?;
    let done = match source {
        "zigbee2mqtt" => zigbee2mqtt(event.topic, event.payload),
        "tasmota" => tasmota(event.topic, event.payload),
        "shelly" => shelly(event.payload),
        "statestream" => statestream(event.topic, event.payload),
        "sparkplug" => sparkplug(event.payload),
        other => {
            kiri_sdk::log!(Level::Error, "unknown source {:?}", other);
            return Err(NO_SOURCE);
        }
    };
    match done {
        Ok(()) => Ok(()),
        Err(Fail::Emit(e)) => Err(e),
        Err(Fail::Shape) => {
            kiri_sdk::log!(Level::Warn, "{}: not a {} payload", event.topic, source);
            Err(WRONG_SHAPE)
        }
    }
}

kiri_sdk::handler!(on_event);

#[cfg(test)]
mod tests {
    use super::*;
    use kiri_sdk::mock;

    /// A JSON sample as the gateway delivers it with `deliver = "cbor"`.
    fn cbor(json: &str) -> Vec<u8> {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let mut out = Vec::new();
        ciborium::ser::into_writer(&v, &mut out).unwrap();
        out
    }

    fn run(source: &str, topic: &str, payload: &[u8]) -> Vec<(String, String, f64, String)> {
        mock::set_config("source", source);
        on_event(&Event {
            topic,
            payload,
            received_at_ms: 0,
        })
        .unwrap();
        // In any order: JSON objects carry no order the gateway keeps.
        let mut got: Vec<_> = mock::take_emits()
            .into_iter()
            .map(|(t, p)| {
                let r = Reading::decode(&p).unwrap();
                (t, r.sensor.to_string(), r.value, r.unit.to_string())
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        got
    }

    fn sorted(mut want: Vec<(String, String, f64, String)>) -> Vec<(String, String, f64, String)> {
        want.sort_by(|a, b| a.0.cmp(&b.0));
        want
    }

    fn r(t: &str, s: &str, v: f64, u: &str) -> (String, String, f64, String) {
        (t.into(), s.into(), v, u.into())
    }

    #[test]
    fn zigbee2mqtt_one_message_several_quantities() {
        // https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html
        let p = cbor(r#"{"temperature":21.5,"humidity":40,"linkquality":120,"voltage":2995}"#);
        assert_eq!(
            run("zigbee2mqtt", "zigbee2mqtt/living_room", &p),
            sorted(vec![
                r("readings/living_room/temperature", "living_room", 21.5, "C"),
                r("readings/living_room/humidity", "living_room", 40.0, "%RH"),
                r("readings/living_room/voltage", "living_room", 2995.0, "mV"),
            ])
        );
    }

    #[test]
    fn tasmota_sensor_telemetry() {
        // https://tasmota.github.io/docs/MQTT/ (tele/<topic>/SENSOR)
        let p = cbor(
            r#"{"Time":"2017-02-16T10:13:52","DS18B20":{"Temperature":20.6},
               "BME280":{"Temperature":68.9,"Humidity":45.1,"Pressure":1013.2},"TempUnit":"F"}"#,
        );
        assert_eq!(
            run("tasmota", "tele/tasmota_1/SENSOR", &p),
            sorted(vec![
                r(
                    "readings/tasmota_1/DS18B20/temperature",
                    "tasmota_1/DS18B20",
                    20.6,
                    "F"
                ),
                r(
                    "readings/tasmota_1/BME280/temperature",
                    "tasmota_1/BME280",
                    68.9,
                    "F"
                ),
                r(
                    "readings/tasmota_1/BME280/humidity",
                    "tasmota_1/BME280",
                    45.1,
                    "%RH"
                ),
                r(
                    "readings/tasmota_1/BME280/pressure",
                    "tasmota_1/BME280",
                    1013.2,
                    "hPa"
                ),
            ])
        );
    }

    #[test]
    fn shelly_gen2_notify_status() {
        // https://shelly-api-docs.shelly.cloud/gen2/General/Notifications
        let p = cbor(
            r#"{"src":"shellyplusht-08b61fcb7f3c","dst":"user_1","method":"NotifyStatus",
               "params":{"ts":1631186545.04,"temperature:0":{"id":0,"tC":21.3,"tF":70.3},
               "humidity:0":{"id":0,"rh":45.2}}}"#,
        );
        let got = run("shelly", "shellyplusht-08b61fcb7f3c/events/rpc", &p);
        assert_eq!(
            got,
            sorted(vec![
                r(
                    "readings/shellyplusht-08b61fcb7f3c/temperature:0/temperature",
                    "shellyplusht-08b61fcb7f3c/temperature:0",
                    21.3,
                    "C"
                ),
                r(
                    "readings/shellyplusht-08b61fcb7f3c/humidity:0/humidity",
                    "shellyplusht-08b61fcb7f3c/humidity:0",
                    45.2,
                    "%RH"
                ),
            ])
        );
    }

    #[test]
    fn esphome_and_home_assistant_statestream_numbers_as_text() {
        // https://esphome.io/components/mqtt, https://www.home-assistant.io/integrations/mqtt_statestream/
        assert_eq!(
            run(
                "statestream",
                "livingroom/sensor/temperature/state",
                b"21.5"
            ),
            [r(
                "readings/temperature/temperature",
                "temperature",
                21.5,
                "C"
            )]
        );
        assert_eq!(
            run(
                "statestream",
                "homeassistant/sensor/living_room_humidity/state",
                br#""40.5""#
            ),
            [r(
                "readings/living_room_humidity/humidity",
                "living_room_humidity",
                40.5,
                "%RH"
            )]
        );
        assert!(run("statestream", "homeassistant/light/lamp/state", b"\"on\"").is_empty());
    }

    #[test]
    fn sparkplug_metrics_become_readings() {
        let p = cbor(
            r#"{"message_type":"DDATA","group":"plant","edge_node":"line1","device":"meter",
               "metrics":[{"name":"Temperature","alias":1,"datatype":"Double","value":21.75},
                          {"name":null,"alias":9,"datatype":"Int16","value":3},
                          {"name":"Status","datatype":"String","value":"ok"}]}"#,
        );
        assert_eq!(
            run("sparkplug", "spBv1.0/plant/DDATA/line1/meter", &p),
            [r(
                "readings/line1/meter/Temperature",
                "line1/meter",
                21.75,
                ""
            )]
        );
    }

    #[test]
    fn a_payload_of_the_wrong_shape_fails_the_invocation() {
        mock::set_config("source", "tasmota");
        let e = on_event(&Event {
            topic: "tele/x/SENSOR",
            payload: b"21.5",
            received_at_ms: 0,
        });
        assert_eq!(e, Err(WRONG_SHAPE));
    }
}
