//! MQTT topic names and filters (MQTT 3.1.1 §4.7): validation, matching and covering.
//! Pure functions, no I/O.

/// Why a topic name or filter is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty string.
    #[error("topic is empty")]
    Empty,
    /// Longer than MQTT's 65535-byte limit.
    #[error("topic is longer than 65535 bytes")]
    TooLong,
    /// Contains NUL.
    #[error("topic contains NUL")]
    Nul,
    /// A topic name (not a filter) contains `+` or `#`.
    #[error("topic name contains a wildcard (+ or #)")]
    Wildcard,
    /// `#` not alone in the last level, or `+` not alone in its level.
    #[error("wildcard must fill a whole level, and # must be last")]
    BadWildcard,
}

fn common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > 65535 {
        return Err(TopicError::TooLong);
    }
    if s.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// Checks a topic name (what is published to).
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    common(name)?;
    if name.contains(['+', '#']) {
        return Err(TopicError::Wildcard);
    }
    Ok(())
}

/// Checks a topic filter (what is subscribed to).
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    common(filter)?;
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let last = i + 1 == levels.len();
        match *level {
            "#" if last => {}
            "+" => {}
            l if l.contains(['+', '#']) => return Err(TopicError::BadWildcard),
            "#" => return Err(TopicError::BadWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// Does the (valid) `filter` match the (valid) topic `name`?
///
/// Wildcards at the first level do not match names starting with `$` (§4.7.2).
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut n = name.split('/');
    loop {
        match (f.next(), n.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(nl)) if fl == nl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Does every name that `b` matches also match `a`? (Both valid filters.)
pub fn covers(a: &str, b: &str) -> bool {
    // Wildcard-first filters never match `$` topics, which a `$`-literal filter may.
    if a.starts_with(['+', '#']) && b.starts_with('$') {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(xl), Some(yl)) if xl == yl && xl != "+" && xl != "#" => {}
            (Some("+"), Some("+")) => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The smallest subset of `filters` that matches the same names: drops duplicates and
/// filters covered by another, so overlapping subscriptions do not deliver a message twice.
pub fn minimal_cover(filters: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in filters {
        if out.iter().any(|o| covers(o, f)) {
            continue;
        }
        out.retain(|o| !covers(f, o));
        out.push(f.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wildcards_match_as_the_spec_says() {
        assert!(matches("sensors/+/temperature", "sensors/s1/temperature"));
        assert!(!matches(
            "sensors/+/temperature",
            "sensors/s1/x/temperature"
        ));
        assert!(matches("sensors/#", "sensors"));
        assert!(matches("sensors/#", "sensors/a/b"));
        assert!(matches("#", "a/b"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("+/+", "/a"));
        assert!(matches("a/+", "a/"));
        assert!(!matches("a/+", "a"));
        assert!(!matches("a", "a/b"));
    }

    #[test]
    fn invalid_filters_and_names_are_refused() {
        assert_eq!(validate_filter("a/#/b"), Err(TopicError::BadWildcard));
        assert_eq!(validate_filter("a/b#"), Err(TopicError::BadWildcard));
        assert_eq!(validate_filter("a+/b"), Err(TopicError::BadWildcard));
        assert_eq!(validate_filter(""), Err(TopicError::Empty));
        assert!(validate_filter("+/+/#").is_ok());
        assert_eq!(validate_name("a/+"), Err(TopicError::Wildcard));
        assert_eq!(validate_name("a\0"), Err(TopicError::Nul));
    }

    #[test]
    fn covered_filters_are_dropped_from_subscriptions() {
        let fs: Vec<String> = ["sensors/+/temperature", "sensors/#", "other/x", "other/x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            minimal_cover(&fs),
            vec!["sensors/#".to_string(), "other/x".to_string()]
        );
        assert!(!covers("a/+", "a/#"));
        assert!(covers("a/#", "a/+/b"));
        assert!(!covers("#", "$SYS/#"));
    }

    /// The reference: match by regular-expression-free recursion over levels.
    fn reference(filter: &[&str], name: &[&str]) -> bool {
        match (filter.first(), name.first()) {
            (Some(&"#"), _) => true,
            (Some(&"+"), Some(_)) => reference(&filter[1..], &name[1..]),
            (Some(f), Some(n)) => f == n && reference(&filter[1..], &name[1..]),
            (None, None) => true,
            _ => false,
        }
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just(String::new()),
            Just("$s".to_string())
        ]
    }

    fn filter_level() -> impl Strategy<Value = String> {
        prop_oneof![level(), Just("+".to_string())]
    }

    proptest! {
        #[test]
        fn matching_agrees_with_the_reference(
            name in prop::collection::vec(level(), 1..5),
            mut filter in prop::collection::vec(filter_level(), 1..5),
            hash in any::<bool>(),
        ) {
            if hash { filter.push("#".into()); }
            let (n, f) = (name.join("/"), filter.join("/"));
            prop_assume!(validate_name(&n).is_ok() && validate_filter(&f).is_ok());
            let fl: Vec<&str> = filter.iter().map(String::as_str).collect();
            let nl: Vec<&str> = name.iter().map(String::as_str).collect();
            let dollar = n.starts_with('$') && (f.starts_with('+') || f.starts_with('#'));
            prop_assert_eq!(matches(&f, &n), !dollar && reference(&fl, &nl));
        }

        #[test]
        fn a_covering_filter_matches_everything_the_covered_one_does(
            a in prop::collection::vec(filter_level(), 1..4),
            b in prop::collection::vec(filter_level(), 1..4),
            name in prop::collection::vec(level(), 1..5),
            ha in any::<bool>(), hb in any::<bool>(),
        ) {
            let (mut a, mut b) = (a, b);
            if ha { a.push("#".into()); }
            if hb { b.push("#".into()); }
            let (a, b, n) = (a.join("/"), b.join("/"), name.join("/"));
            prop_assume!(validate_filter(&a).is_ok() && validate_filter(&b).is_ok());
            if covers(&a, &b) && matches(&b, &n) {
                prop_assert!(matches(&a, &n));
            }
        }
    }
}
