//! The resolved configuration written back as TOML (`kiri config check`), from the value tree
//! figment already builds of it. Written here rather than with the `toml` crate's serializer:
//! that costs 53 KB more in the device build, which must stay under 10 MB (issue 8); reading
//! the output back gives the same configuration (a test checks it).

use std::fmt::Write;

use figment::value::{Dict, Num, Value};

/// `root` as a TOML document: the sections in `order` first, then any others.
pub(super) fn document(root: &Dict, order: &[&str]) -> String {
    let mut out = String::new();
    let mut keys: Vec<&String> = order
        .iter()
        .filter_map(|k| root.get_key_value(*k).map(|(k, _)| k))
        .collect();
    keys.extend(root.keys().filter(|k| !order.contains(&k.as_str())));
    let top: Dict = keys
        .iter()
        .map(|k| ((*k).clone(), root[k.as_str()].clone()))
        .collect();
    table(&mut out, &[], &top, &keys);
    out.trim_start().to_string()
}

/// The plain keys of `dict`, then its tables and arrays of tables, in `order`.
fn table(out: &mut String, path: &[String], dict: &Dict, order: &[&String]) {
    for k in order {
        let v = &dict[k.as_str()];
        if !is_table(v) && !is_array_of_tables(v) {
            if let Some(text) = inline(v) {
                let _ = writeln!(out, "{} = {text}", key(k));
            }
        }
    }
    for k in order {
        let v = &dict[k.as_str()];
        let mut sub = path.to_vec();
        sub.push((*k).clone());
        let header: Vec<String> = sub.iter().map(|s| key(s)).collect();
        match v {
            Value::Dict(_, d) => {
                let _ = writeln!(out, "\n[{}]", header.join("."));
                let keys: Vec<&String> = d.keys().collect();
                table(out, &sub, d, &keys);
            }
            Value::Array(_, items) if is_array_of_tables(v) => {
                for item in items {
                    if let Value::Dict(_, d) = item {
                        let _ = writeln!(out, "\n[[{}]]", header.join("."));
                        let keys: Vec<&String> = d.keys().collect();
                        table(out, &sub, d, &keys);
                    }
                }
            }
            _ => {}
        }
    }
}

fn is_table(v: &Value) -> bool {
    matches!(v, Value::Dict(..))
}

fn is_array_of_tables(v: &Value) -> bool {
    matches!(v, Value::Array(_, items) if !items.is_empty() && items.iter().all(is_table))
}

/// A value written inline; `None` for an absent one.
fn inline(v: &Value) -> Option<String> {
    Some(match v {
        Value::String(_, s) => string(s),
        Value::Char(_, c) => string(&c.to_string()),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => number(n),
        Value::Empty(..) => return None,
        Value::Array(_, items) => {
            let items: Vec<String> = items.iter().filter_map(inline).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Dict(_, d) => {
            let items: Vec<String> = d
                .iter()
                .filter_map(|(k, v)| Some(format!("{} = {}", key(k), inline(v)?)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
    })
}

fn number(n: &Num) -> String {
    let float = |f: f64| {
        if f.is_nan() {
            "nan".to_string()
        } else if f.is_infinite() {
            if f > 0.0 { "inf" } else { "-inf" }.to_string()
        } else if f.fract() == 0.0 && f.abs() < 1e15 {
            // A whole float keeps its point, else TOML reads it back as an integer.
            format!("{f:.1}")
        } else {
            f.to_string()
        }
    };
    match *n {
        Num::F32(f) => float(f as f64),
        Num::F64(f) => float(f),
        Num::U8(v) => v.to_string(),
        Num::U16(v) => v.to_string(),
        Num::U32(v) => v.to_string(),
        Num::U64(v) => v.to_string(),
        Num::U128(v) => v.to_string(),
        Num::USize(v) => v.to_string(),
        Num::I8(v) => v.to_string(),
        Num::I16(v) => v.to_string(),
        Num::I32(v) => v.to_string(),
        Num::I64(v) => v.to_string(),
        Num::I128(v) => v.to_string(),
        Num::ISize(v) => v.to_string(),
    }
}

/// A bare key when it can be one, else quoted.
fn key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        k.to_string()
    } else {
        string(k)
    }
}

/// A TOML basic string.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_keys_and_numbers_read_back_as_written() {
        let mut d = Dict::new();
        d.insert("plain".into(), Value::from("a \"q\" \\ \n\t\u{1}é"));
        d.insert("whole".into(), Value::from(30.0f64));
        d.insert("odd key".into(), Value::from(1u64));
        d.insert(
            "list".into(),
            Value::from(vec![Value::from("x"), Value::from("y")]),
        );
        let text = document(&d, &[]);
        let back: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(back["plain"].as_str(), Some("a \"q\" \\ \n\t\u{1}é"));
        assert_eq!(back["whole"].as_float(), Some(30.0));
        assert_eq!(back["odd key"].as_integer(), Some(1));
        assert_eq!(back["list"].as_array().unwrap().len(), 2);
    }
}
