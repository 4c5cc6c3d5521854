//! `topic`: MQTT topic names and filters against a reference matcher written from the spec.

use crate::net::topic::{covers, matches, minimal_cover, validate_filter, validate_name};

/// At most this many lines are read (the checks are quadratic in them).
const MAX_LINES: usize = 8;

/// MQTT 3.1.1 §4.7 as directly as it reads: level by level, `+` one level, `#` the rest
/// (including the parent level), and no wildcard first level for a `$` topic.
fn reference(filter: &str, name: &str) -> bool {
    fn levels(f: &[&str], n: &[&str]) -> bool {
        match (f.split_first(), n.split_first()) {
            (Some((&"#", _)), _) => true,
            (Some((&"+", f)), Some((_, n))) => levels(f, n),
            (Some((a, f)), Some((b, n))) => a == b && levels(f, n),
            (None, None) => true,
            _ => false,
        }
    }
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    levels(&f, &n)
}

/// Names a filter matches: `+` as a level `x`, `#` as nothing (the parent) or `x/y`.
fn instances(filter: &str) -> [String; 2] {
    let with = |hash: &str| {
        let levels: Vec<&str> = filter
            .split('/')
            .map(|l| match l {
                "+" => "x",
                "#" => hash,
                l => l,
            })
            .collect();
        let name = levels.join("/");
        match (hash, filter.ends_with("/#")) {
            // `a/#` matches `a`, the parent level: drop the separator with the `#`.
            ("", true) => name[..name.len() - 1].to_string(),
            _ => name,
        }
    };
    [with(""), with("x/y")]
}

/// The input is lines of text (invalid UTF-8 replaced): each is tried as a name and as a
/// filter; every valid filter is checked against every valid name with the reference, every
/// pair of filters for covering, and all of them for their minimal cover.
pub fn topic(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').take(MAX_LINES).collect();
    let mut names = Vec::new();
    let mut filters = Vec::new();
    for l in &lines {
        let name = validate_name(l).is_ok();
        let filter = validate_filter(l).is_ok();
        assert!(!name || filter, "a valid name {l:?} is a valid filter");
        if name {
            names.push(*l);
            assert!(matches(l, l), "a name as a filter matches itself: {l:?}");
        }
        if filter {
            filters.push(l.to_string());
        }
    }
    // Names each filter matches, for the covering checks to have something to match.
    let derived: Vec<String> = filters.iter().flat_map(|f| instances(f)).collect();
    names.extend(
        derived
            .iter()
            .map(String::as_str)
            .filter(|n| validate_name(n).is_ok()),
    );
    for f in &filters {
        assert!(covers(f, f), "a filter covers itself: {f:?}");
        for n in &names {
            assert_eq!(matches(f, n), reference(f, n), "filter {f:?}, name {n:?}");
        }
    }
    for a in &filters {
        for b in &filters {
            if covers(a, b) {
                for n in &names {
                    assert!(
                        !matches(b, n) || matches(a, n),
                        "{a:?} covers {b:?}, which matches {n:?}, but {a:?} does not"
                    );
                }
            }
        }
    }
    let cover = minimal_cover(&filters);
    for c in &cover {
        assert!(filters.contains(c), "the cover adds nothing");
    }
    for f in &filters {
        assert!(
            cover.iter().any(|c| covers(c, f)),
            "{f:?} is covered by the minimal cover {cover:?}"
        );
    }
    for (i, a) in cover.iter().enumerate() {
        for (j, b) in cover.iter().enumerate() {
            assert!(
                i == j || !covers(a, b),
                "{a:?} covers {b:?}, both in the minimal cover"
            );
        }
    }
}
