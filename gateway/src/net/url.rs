//! Broker addresses: `mqtt://host[:port]` and `mqtts://host[:port]`.

/// A broker address: `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (TLS,
/// default port 8883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether to connect with TLS.
    pub tls: bool,
}

/// Parses an `mqtt://` or `mqtts://` URL.
pub fn parse_mqtt_url(url: &str) -> Result<MqttUrl, String> {
    let (rest, tls) = match url.split_once("://") {
        Some(("mqtt", rest)) => (rest, false),
        Some(("mqtts", rest)) => (rest, true),
        _ => {
            return Err(format!(
                "{url}: expected mqtt://host:port or mqtts://host:port"
            ))
        }
    };
    let default_port = if tls { 8883 } else { 1883 };
    let rest = rest.trim_end_matches('/');
    let port_of = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("{url}: bad port {p:?}"))
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url}: unclosed ["))?;
        match after.strip_prefix(':') {
            Some(p) => (h, port_of(p)?),
            None if after.is_empty() => (h, default_port),
            None => return Err(format!("{url}: bad host")),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, port_of(p)?),
            None => (rest, default_port),
        }
    };
    if host.is_empty()
        || host.contains(['/', '@', '[', ']'])
        || (host.contains(':') && !rest.starts_with('['))
    {
        return Err(format!("{url}: bad host"));
    }
    Ok(MqttUrl {
        host: host.to_string(),
        port,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls_parse() {
        let url = |host: &str, port, tls| {
            Ok(MqttUrl {
                host: host.into(),
                port,
                tls,
            })
        };
        assert_eq!(parse_mqtt_url("mqtt://host:1884"), url("host", 1884, false));
        assert_eq!(parse_mqtt_url("mqtt://host"), url("host", 1883, false));
        assert_eq!(parse_mqtt_url("mqtts://host"), url("host", 8883, true));
        assert_eq!(
            parse_mqtt_url("mqtts://h.example:443"),
            url("h.example", 443, true)
        );
        assert_eq!(
            parse_mqtt_url("mqtt://[::1]:1885/"),
            url("::1", 1885, false)
        );
        assert!(parse_mqtt_url("http://host").is_err());
        assert!(parse_mqtt_url("mqtt://host:x").is_err());
        assert!(parse_mqtt_url("mqtt://:1").is_err());
    }
}
