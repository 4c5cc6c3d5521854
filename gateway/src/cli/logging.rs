//! The gateway's log on stderr, filtered by `KIRI_LOG` (default `info`, rumqttd's own lines
//! off): text for people, with colours on a terminal; JSON, one object per line, for log
//! shippers; and under systemd, when stderr is journald's stream (`JOURNAL_STREAM` names it),
//! text without the time (the journal stamps each line) and with each line's level as its
//! syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug), which journald
//! reads off the line: `journalctl -p warning` then finds warnings and errors.
//!
//! The JSON lines are written here with serde_json rather than by tracing-subscriber's `json`
//! feature: that costs 35 KB more in the device build, which must stay under 10 MB (issue 8).

use std::fmt;

use kiri::config::LogFormat;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Installs the subscriber.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("KIRI_LOG").unwrap_or_else(|_| EnvFilter::new("info,rumqttd=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .with_ansi(false)
            .fmt_fields(JsonFields)
            .event_format(JsonLines)
            .init(),
        LogFormat::Text if stderr_is_journal() => builder
            .with_ansi(false)
            .event_format(Journald(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            ))
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// Whether stderr is the journal's stream: `JOURNAL_STREAM` is `<device>:<inode>` of it.
fn stderr_is_journal() -> bool {
    let Some(named) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    let Some((dev, ino)) = named.split_once(':') else {
        return false;
    };
    // SAFETY: fstat writes into the struct it is given; descriptor 2 is stderr.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    dev.parse::<u64>().ok() == Some(st.st_dev as u64)
        && ino.parse::<u64>().ok() == Some(st.st_ino as u64)
}

/// The syslog priority journald reads from a line's `<N>` prefix.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A text line prefixed with its level's priority.
struct Journald<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journald<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Fields as a JSON object: text as strings, numbers and booleans as such, the rest as their
/// `Debug` text.
#[derive(Default)]
struct JsonVisitor(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// A span's fields, kept as a JSON object's text.
struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = JsonVisitor::default();
        fields.record(&mut v);
        write!(writer, "{}", serde_json::Value::Object(v.0))
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut v = JsonVisitor::default();
        if let Ok(serde_json::Value::Object(had)) = serde_json::from_str(&current.fields) {
            v.0 = had;
        }
        fields.record(&mut v);
        current.fields = serde_json::Value::Object(v.0).to_string();
        Ok(())
    }
}

/// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`), and
/// `spans`, outermost first, each with its `name` and its fields.
struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let mut fields = JsonVisitor::default();
        event.record(&mut fields);
        let spans: Vec<serde_json::Value> = ctx
            .event_scope()
            .into_iter()
            .flat_map(|scope| scope.from_root())
            .map(|span| {
                let mut entry = serde_json::Map::new();
                entry.insert("name".into(), span.name().into());
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<JsonFields>>() {
                    if let Ok(serde_json::Value::Object(had)) = serde_json::from_str(&f.fields) {
                        entry.extend(had);
                    }
                }
                serde_json::Value::Object(entry)
            })
            .collect();
        let meta = event.metadata();
        let line = serde_json::json!({
            "timestamp": time,
            "level": meta.level().as_str(),
            "target": meta.target(),
            "fields": fields.0,
            "spans": spans,
        });
        writeln!(writer, "{line}")
    }
}
