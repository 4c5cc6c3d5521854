//! Configuration errors in the user's words: the key as written in the file
//! (`functions[2].trigers`, counting `[[functions]]` tables from 1), the file and line where it
//! can be found, and for an unknown key the closest valid one.

use figment::error::Kind;

/// Where the configuration's text came from, to find lines in.
pub(super) struct Source<'a> {
    /// Its name, as shown.
    pub name: String,
    /// Its text.
    pub text: &'a str,
}

/// Every error in `e`, one per line.
pub(super) fn describe(e: figment::Error, source: Option<&Source<'_>>) -> String {
    e.into_iter()
        .map(|e| one(&e, source))
        .collect::<Vec<_>>()
        .join("\n")
}

fn one(e: &figment::Error, source: Option<&Source<'_>>) -> String {
    let key = key(&e.path);
    let variable = e
        .metadata
        .as_ref()
        .filter(|m| m.name.starts_with("environment variable"));
    let place = if let Some(variable) = variable {
        format!(" (from {})", variable.name)
    } else {
        source
            .and_then(|s| line_of(s.text, &e.path).map(|n| format!(" ({} line {n})", s.name)))
            .unwrap_or_default()
    };
    match &e.kind {
        Kind::UnknownField(found, expected) => {
            let near = closest(found, expected)
                .map(|k| format!(": did you mean `{k}`?"))
                .unwrap_or_default();
            format!(
                "unknown key `{key}`{place}{near} (the keys here: {})",
                expected.join(", ")
            )
        }
        Kind::UnknownVariant(found, expected) => {
            let near = closest(found, expected)
                .map(|k| format!(": did you mean \"{k}\"?"))
                .unwrap_or_default();
            format!(
                "`{key}`{place}: unknown value \"{found}\"{near} (one of: {})",
                expected.join(", ")
            )
        }
        Kind::InvalidType(actual, expected) => {
            format!("`{key}`{place}: expected {expected}, found {actual}")
        }
        Kind::MissingField(field) => {
            let key = if key.is_empty() {
                field.to_string()
            } else {
                format!("{key}.{field}")
            };
            format!("`{key}` is missing{place}")
        }
        other => format!("`{key}`{place}: {other}"),
    }
}

/// The key as written: `functions[2].limits.fuel` (array entries counted from 1).
fn key(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment.parse::<usize>() {
            Ok(i) => out += &format!("[{}]", i + 1),
            Err(_) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out += segment;
            }
        }
    }
    out
}

/// The valid key nearest to `found`, if one is near enough to be a typo.
pub(super) fn closest<'a>(found: &str, expected: &[&'a str]) -> Option<&'a str> {
    expected
        .iter()
        .map(|k| (strsim::damerau_levenshtein(found, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The line (from 1) of the key `path` names, when the file shows it plainly: `key =` in the
/// table the path leads to (`[section]`, or the n-th `[[array]]`).
fn line_of(text: &str, path: &[String]) -> Option<usize> {
    let (last, tables) = path.split_last()?;
    // The header that opens the key's table, and which occurrence of it.
    let (header, nth) = match tables {
        [] => (None, 0),
        [t] => (Some(format!("[{t}]")), 0),
        [t, i] if i.parse::<usize>().is_ok() => (Some(format!("[[{t}]]")), i.parse().ok()?),
        _ => return None,
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = match &header {
        None => 0,
        Some(h) => {
            lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.trim() == h)
                .nth(nth)?
                .0
                + 1
        }
    };
    for (i, l) in lines.iter().enumerate().skip(start) {
        let t = l.trim_start();
        if t.starts_with('[') {
            break;
        }
        if let Some(rest) = t.strip_prefix(last.as_str()) {
            if rest.trim_start().starts_with('=') {
                return Some(i + 1);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_names_the_key_as_written_its_line_and_the_closest_key() {
        let text = "[gateway]\nid = \"gw\"\n[[functions]]\nname = \"a\"\nmodule = \"a.wasm\"\ntriggers = [\"x\"]\n[[functions]]\nname = \"b\"\nmodule = \"b.wasm\"\ntrigers = [\"x\"]\n";
        let dir = tempfile::tempdir().unwrap();
        let e = super::super::Config::from_toml_str(text, dir.path(), Vec::new()).unwrap_err();
        let said = e.to_string();
        assert!(
            said.starts_with("unknown key `functions[2].trigers` (")
                && said.contains("line 10): did you mean `triggers`?"),
            "{said}"
        );
        assert!(!said.contains("default."), "{said}");
    }

    #[test]
    fn keys_are_written_as_in_the_file() {
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            key(&path(&["functions", "0", "limits", "fuel"])),
            "functions[1].limits.fuel"
        );
        assert_eq!(key(&path(&["cloud", "url"])), "cloud.url");
        assert_eq!(closest("encodng", &["url", "encoding"]), Some("encoding"));
        assert_eq!(closest("zzzzzz", &["url", "encoding"]), None);
        let text = "[cloud]\nurl = \"x\"\n\n[outbox]\n max_records = 5\n";
        assert_eq!(line_of(text, &path(&["outbox", "max_records"])), Some(5));
        assert_eq!(line_of(text, &path(&["outbox", "absent"])), None);
    }
}
