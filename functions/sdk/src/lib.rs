//! The Rust SDK for Kiri functions (ABI v1, see `docs/writing-functions.md`).
//!
//! A function is a plain Rust function registered with [`handler!`]:
//!
//! ```ignore
//! #![no_std]
//! use kiri_sdk::{Event, Error};
//!
//! fn on_event(event: &Event) -> Result<(), Error> {
//!     kiri_sdk::emit("echo", event.payload)
//! }
//! kiri_sdk::handler!(on_event);
//! ```
//!
//! Built for `wasm32-unknown-unknown` (or `wasm32-wasip1`), the calls go to the gateway. Built
//! for any other target they go to [`mock`], an in-process stand-in, so the same function can
//! be unit-tested natively.
//!
//! With the `std` feature (for `wasm32-wasip1`: the standard library, `println!` to the log),
//! [`Event::parse`] reads a JSON or CBOR payload into any serde type, [`emit_json`] and
//! [`emit_cbor`] send one, [`SensorReading`] is a reading with owned fields and
//! [`config_string`] reads a configuration value of any length.
#![no_std]
#![deny(missing_docs)]

#[cfg(any(feature = "std", not(target_arch = "wasm32")))]
extern crate std;

#[cfg(feature = "std")]
mod with_std;
#[cfg(feature = "std")]
pub use with_std::{
    config_string, config_typed, config_value, emit_cbor, emit_json, ParseError, SensorReading,
};

pub use kiri_abi as abi;

mod fmt;
mod instance;
#[cfg(not(target_arch = "wasm32"))]
pub mod mock;
/// The CBOR sensor reading format (the `kiri-reading` crate).
pub use kiri_reading as reading;
#[cfg(target_arch = "wasm32")]
mod wasm;

#[cfg(not(target_arch = "wasm32"))]
use mock as host;
#[cfg(target_arch = "wasm32")]
use wasm as host;

pub use fmt::LineBuf;
pub use instance::PerInstance;
pub use reading::{Reading, ReadingError};

/// One event delivered to the function.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The MQTT topic the event arrived on.
    pub topic: &'a str,
    /// The message payload, as published.
    pub payload: &'a [u8],
    /// When the gateway received the message, milliseconds since the Unix epoch.
    pub received_at_ms: i64,
}

impl<'a> Event<'a> {
    /// Builds the event from the raw arguments of `kiri_on_event`.
    ///
    /// # Safety
    /// The pointers and lengths must be the ones the host passed to `kiri_on_event`.
    #[doc(hidden)]
    pub unsafe fn from_raw(tp: i32, tl: i32, pp: i32, pl: i32, at: i64) -> Event<'a> {
        let topic = core::slice::from_raw_parts(tp as usize as *const u8, tl as usize);
        let payload = core::slice::from_raw_parts(pp as usize as *const u8, pl as usize);
        Event {
            // The host only passes topics it received as valid UTF-8 MQTT topic names.
            topic: core::str::from_utf8_unchecked(topic),
            payload,
            received_at_ms: at,
        }
    }

    /// The payload as a [CBOR reading](Reading). When it is not one, logs
    /// `<topic>: not a reading: <why>` at warn level (so the handler only maps the error to
    /// its own code: `event.reading().map_err(|_| NOT_A_READING)?`).
    pub fn reading(&self) -> Result<Reading<'a>, ReadingError> {
        Reading::decode(self.payload).map_err(|e| not_a_reading(self.topic, e))
    }
}

// Out of line: formatting code inlined into a handler costs fuel on every event, run or not.
#[cold]
#[inline(never)]
fn not_a_reading(topic: &str, e: ReadingError) -> ReadingError {
    log!(Level::Warn, "{}: not a reading: {:?}", topic, e);
    e
}

/// Why a function or a host call failed: an ABI v1 result code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error(i32);

impl Error {
    /// A function-defined failure; `code` is recorded by the gateway (0 becomes 1).
    pub const fn new(code: i32) -> Error {
        Error(if code == 0 { 1 } else { code })
    }
    /// The numeric code.
    pub const fn code(self) -> i32 {
        self.0
    }
    /// The host refused a topic or payload as too large.
    pub const TOO_LARGE: Error = Error(abi::code::TOO_LARGE);
    /// The invocation used up its output allowance.
    pub const LIMIT: Error = Error(abi::code::LIMIT);
    /// The function may not use that topic (its `publish` / `emit` allow-list), or the HTTP
    /// caller's token does not grant that topic or key prefix.
    pub const DENIED: Error = Error(abi::code::DENIED);
    /// The topic is malformed.
    pub const INVALID: Error = Error(abi::code::INVALID);
}

fn check(code: i32) -> Result<(), Error> {
    if code >= 0 {
        Ok(())
    } else {
        Err(Error(code))
    }
}

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Normal operation.
    Info,
    /// Detail for debugging.
    Debug,
}

impl Level {
    fn code(self) -> i32 {
        match self {
            Level::Error => abi::level::ERROR,
            Level::Warn => abi::level::WARN,
            Level::Info => abi::level::INFO,
            Level::Debug => abi::level::DEBUG,
        }
    }
}

/// Sends a result to the cloud: it is committed with this invocation and forwarded as
/// `<topic_prefix>/<topic>`.
pub fn emit(topic: &str, payload: &[u8]) -> Result<(), Error> {
    check(host::emit(topic.as_bytes(), payload))
}

/// Publishes a message on the gateway's local broker, after this invocation commits.
pub fn publish(topic: &str, payload: &[u8]) -> Result<(), Error> {
    check(host::publish(topic.as_bytes(), payload))
}

/// Sets the response body of an HTTP invocation (`POST /invoke/<function>`; its topic is
/// `$http`). Sent once the invocation's other effects are committed. Ignored for other events.
pub fn respond(body: &[u8]) -> Result<(), Error> {
    check(host::respond(body))
}

/// The format of the event's payload as this function received it: the trigger's `format`,
/// after the conversion the function's `deliver` asks for. `None` for a timer tick (no
/// payload); an HTTP invocation's body is `Bytes`.
pub fn input_format() -> Option<Format> {
    match host::input_format() {
        abi::format::CBOR => Some(Format::Cbor),
        abi::format::JSON => Some(Format::Json),
        abi::format::TEXT => Some(Format::Text),
        abi::format::BYTES => Some(Format::Bytes),
        abi::format::SPARKPLUG_B => Some(Format::SparkplugB),
        _ => None,
    }
}

/// A payload format, as [`input_format`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One CBOR data item.
    Cbor,
    /// One JSON value, UTF-8.
    Json,
    /// UTF-8 text.
    Text,
    /// Any bytes.
    Bytes,
    /// A Sparkplug B payload (protobuf), as it came.
    SparkplugB,
}

/// The verified identity of the HTTP caller (the `sub` of the JWT it presented), read into
/// `buf` (256 bytes always suffice). `None` for MQTT events, timers, replays and calls made
/// with the admin token. A function can authorise per resource with it; the gateway has
/// already limited the topics and key-value keys it may use to the token's `prefix:` scopes.
pub fn caller(buf: &mut [u8]) -> Option<&str> {
    let n = host::caller(buf);
    if n < 0 || n as usize > buf.len() {
        return None;
    }
    core::str::from_utf8(&buf[..n as usize]).ok()
}

/// Writes a log line attributed to this function.
pub fn log(level: Level, message: &str) {
    host::log(level.code(), message.as_bytes())
}

/// Wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    host::now_ms()
}

/// Reads the configuration value `key` (from the function's `config` table) into `buf`.
/// Returns `None` if the key is not set or the value does not fit in `buf`.
pub fn config<'b>(key: &str, buf: &'b mut [u8]) -> Option<&'b str> {
    let n = host::config(key.as_bytes(), buf);
    if n < 0 || n as usize > buf.len() {
        return None;
    }
    core::str::from_utf8(&buf[..n as usize]).ok()
}

/// For an HTTP call, the request as one JSON object read into `buf`: `method`, `path` (after
/// the function's name, from `/`), `query` (without `?`) and `headers` (the allow-listed ones,
/// names in lower case). `None` for other events, or if it does not fit.
pub fn http_request(buf: &mut [u8]) -> Option<&str> {
    let n = host::http_request(buf);
    if n < 0 || n as usize > buf.len() {
        return None;
    }
    core::str::from_utf8(&buf[..n as usize]).ok()
}

/// Sets the status (200 to 599) and headers (a JSON object of text values, such as
/// `{"content-type":"application/json"}`, or `""` for none) of an HTTP call's answer; the
/// body is [`respond`]'s. `INVALID` for a status or header the gateway does not send.
pub fn http_response(status: u16, headers_json: &str) -> Result<(), Error> {
    check(host::http_response(status as i32, headers_json.as_bytes()))
}

/// Reads the configuration value `key` as JSON into `buf`, typed as the configuration file
/// wrote it (`30.5`, `true`, `"text"`, `[1, 2]`, `{"a": 1}`); an empty `key` gives the whole
/// `config` table as one JSON object. `None` if the key is not set or the JSON does not fit.
pub fn config_json<'b>(key: &str, buf: &'b mut [u8]) -> Option<&'b str> {
    let n = host::config_json(key.as_bytes(), buf);
    if n < 0 || n as usize > buf.len() {
        return None;
    }
    core::str::from_utf8(&buf[..n as usize]).ok()
}

/// The function's own key-value state. Writes are kept with the invocation and committed
/// together with its outputs when it succeeds; a failed invocation leaves no trace.
pub mod kv {
    use super::{check, host, Error};

    /// Reads `key` into `buf`. `None` if the key is not set or the value does not fit.
    pub fn get<'b>(key: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
        let n = host::kv_get(key, buf);
        if n < 0 || n as usize > buf.len() {
            return None;
        }
        Some(&buf[..n as usize])
    }

    /// Sets `key` to `value` (keys up to 256 bytes; values up to the function's limit).
    pub fn put(key: &[u8], value: &[u8]) -> Result<(), Error> {
        check(host::kv_put(key, value))
    }

    /// Deletes `key` (deleting a missing key is not an error).
    pub fn delete(key: &[u8]) -> Result<(), Error> {
        check(host::kv_delete(key))
    }

    /// The keys starting with `prefix`, in order, decoded from `buf` (up to 1024 keys).
    /// `None` if they do not fit in `buf`.
    pub fn list<'b>(prefix: &[u8], buf: &'b mut [u8]) -> Option<Keys<'b>> {
        let n = host::kv_list(prefix, buf);
        if n < 0 || n as usize > buf.len() {
            return None;
        }
        Some(Keys {
            rest: &buf[..n as usize],
        })
    }

    /// Keys returned by [`list`].
    pub struct Keys<'b> {
        rest: &'b [u8],
    }

    impl<'b> Iterator for Keys<'b> {
        type Item = &'b [u8];
        fn next(&mut self) -> Option<&'b [u8]> {
            let len = u16::from_be_bytes([*self.rest.first()?, *self.rest.get(1)?]) as usize;
            let key = self.rest.get(2..2 + len)?;
            self.rest = &self.rest[2 + len..];
            Some(key)
        }
    }
}

/// Reads a configuration value and parses it (`limit = 30.5` → `config_parse::<f64>("limit")`).
/// On every call: keep what does not change in a [`PerInstance`].
pub fn config_parse<T: core::str::FromStr>(key: &str) -> Option<T> {
    let mut buf = [0u8; 128];
    config(key, &mut buf).and_then(|s| s.trim().parse().ok())
}

#[doc(hidden)]
pub fn result_code(result: Result<(), Error>) -> i32 {
    match result {
        Ok(()) => abi::code::OK,
        Err(e) => e.code(),
    }
}

#[doc(hidden)]
pub fn guest_alloc(len: i32) -> i32 {
    host::alloc(len)
}

/// Logs a formatted line at the given level (truncated to 256 bytes; no allocator needed).
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)*) => {{
        let mut line = $crate::LineBuf::new();
        let _ = core::fmt::Write::write_fmt(&mut line, format_args!($($arg)*));
        $crate::log($level, line.as_str());
    }};
}

/// Registers `f: fn(&Event) -> Result<(), Error>` as the function's event handler and
/// defines the exports ABI v1 requires (`kiri_abi_version`, `kiri_alloc`, `kiri_on_event`).
///
/// The exports exist on `wasm32` only: their pointers are 32-bit wasm offsets, meaningless
/// natively, and unmangled symbols of several functions would clash in one native binary.
/// Natively the macro defines `pub fn kiri_handler(&Event) -> Result<(), Error>` instead, which
/// calls `f` against the [`mock`] host (the gateway's benchmarks compare it with the wasm build).
#[macro_export]
macro_rules! handler {
    ($f:path) => {
        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn kiri_abi_version() -> i32 {
            $crate::abi::ABI_VERSION
        }

        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn kiri_alloc(len: i32) -> i32 {
            $crate::guest_alloc(len)
        }

        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn kiri_on_event(tp: i32, tl: i32, pp: i32, pl: i32, at: i64) -> i32 {
            // SAFETY: the host passes a region it wrote inside the buffer from kiri_alloc.
            let event = unsafe { $crate::Event::from_raw(tp, tl, pp, pl, at) };
            $crate::result_code($f(&event))
        }

        /// The event handler, called natively against the SDK's mock host (tests, benchmarks).
        #[cfg(not(target_arch = "wasm32"))]
        pub fn kiri_handler(event: &$crate::Event) -> Result<(), $crate::Error> {
            $f(event)
        }
    };
}

#[cfg(all(
    target_arch = "wasm32",
    feature = "panic-handler",
    not(feature = "std")
))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn a_payload_that_is_not_a_reading_is_logged_with_its_topic() {
        mock::take_logs();
        let event = Event {
            topic: "sensors/x",
            payload: b"hello",
            received_at_ms: 0,
        };
        assert_eq!(event.reading(), Err(ReadingError::Malformed));
        assert_eq!(
            mock::take_logs(),
            [(
                Level::Warn.code(),
                "sensors/x: not a reading: Malformed".to_string()
            )]
        );
    }
}
