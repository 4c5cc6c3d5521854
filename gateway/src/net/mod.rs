//! Network leaves the rest of the gateway shares: MQTT broker addresses and topic syntax,
//! reconnect backoff, connection limits, and rustls configurations. Plain functions and types; nothing here
//! imports another module of the gateway.

mod backoff;
mod connections;
pub mod tls;
pub mod topic;
mod url;

pub use backoff::Backoff;
pub use connections::{Admitted, ConnectionLimits, Connections, Full, Ticket};
pub use url::{parse_mqtt_url, MqttUrl};
