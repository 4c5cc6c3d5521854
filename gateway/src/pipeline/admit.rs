//! What comes in before any function runs: each message checked against the size limit and
//! the payload format of each function it triggers, converted as the function asks, or
//! rejected (logged, counted, kept as a dead letter) and acknowledged.

use super::core::{Core, Role};
use super::journal::Journal;
use super::work::Incoming;
use super::ProcessError;
use crate::dead_letters::Entry;
use crate::formats;
use crate::outbox::OutboxError;

impl<J: Journal> Core<J> {
    /// The functions `m` runs, each with the payload in the form it asks for; a message
    /// too large for any, or not in a function's format, is rejected (for that function).
    pub(super) fn admit<'m>(&self, m: &'m Incoming) -> Result<Vec<Input<'m>>, ProcessError> {
        let payload = &m.publish.payload;
        if payload.len() > self.limits.max_message_bytes {
            let error = format!(
                "payload of {} bytes exceeds broker.max_message_bytes = {}",
                payload.len(),
                self.limits.max_message_bytes
            );
            self.reject(m, None, "oversized", error)?;
            return Ok(Vec::new());
        }
        let mut functions = self.registry.route(&m.publish.topic);
        if let Role::Lane(only) = self.role {
            functions.retain(|&f| f == only);
        }
        let mut inputs = Vec::with_capacity(functions.len());
        for function in functions {
            let Some(spec) = self.registry.spec(function) else {
                continue;
            };
            match Input::of(function, &spec, &m.publish.topic, payload, &self.sparkplug) {
                Ok(input) => inputs.push(input),
                Err(r) => self.reject(m, Some(&spec.name), r.reason, r.error)?,
            }
        }
        Ok(inputs)
    }

    /// A dead letter's payload in the form its function asks for now, if it still passes
    /// the function's format.
    pub(super) fn admit_replay<'r>(
        &self,
        r: &'r crate::dead_letters::retry::Replay,
    ) -> Option<Input<'r>> {
        let spec = self.registry.spec(r.function)?;
        match Input::of(r.function, &spec, &r.topic, &r.payload, &self.sparkplug) {
            Ok(input) => Some(input),
            Err(e) => {
                tracing::warn!(function = %spec.name, topic = %r.topic, reason = e.reason,
                    "dead letter not replayed, it does not pass the function's format: {}", e.error);
                metrics::counter!("kiri_ingest_rejected_total", "reason" => e.reason).increment(1);
                None
            }
        }
    }

    fn reject(
        &self,
        m: &Incoming,
        function: Option<&str>,
        reason: &'static str,
        error: String,
    ) -> Result<(), ProcessError> {
        match function {
            Some(f) => {
                tracing::warn!(topic = %m.publish.topic, function = f, bytes = m.publish.payload.len(), reason, "input rejected: {error}")
            }
            None => {
                tracing::warn!(topic = %m.publish.topic, bytes = m.publish.payload.len(), reason, "input rejected: {error}")
            }
        }
        metrics::counter!("kiri_ingest_rejected_total", "reason" => reason).increment(1);
        let recorded = self.journal.dead_letter(Entry {
            function: function.map(str::to_string),
            version: None,
            topic: m.publish.topic.clone(),
            reason: reason.to_string(),
            error,
            received_ms: m.received_ms,
            payload: m.publish.payload.to_vec(),
            payload_len: m.publish.payload.len() as u64,
            attempts: 0,
            retry_at_ms: None,
            retry_at_age: None,
        });
        match recorded {
            Err(OutboxError::Closed) => Err(ProcessError::ShuttingDown),
            other => Ok(other?),
        }
    }
}

/// What one function gets of one event: its payload in the form the function asks for, and
/// that form's `input_format` code.
pub(super) struct Input<'a> {
    pub(super) function: usize,
    pub(super) payload: std::borrow::Cow<'a, [u8]>,
    pub(super) format: i32,
}

impl<'a> Input<'a> {
    /// `payload` on `topic` for `function` (whose settings are `spec`): checked against its
    /// format and converted as it asks.
    fn of(
        function: usize,
        spec: &crate::config::FunctionConfig,
        topic: &str,
        payload: &'a [u8],
        aliases: &formats::Aliases,
    ) -> Result<Input<'a>, formats::Rejection> {
        let format = formats::check(spec.format_for(topic), payload)?;
        let (payload, format) = formats::deliver(format, spec.deliver, topic, payload, aliases)?;
        Ok(Input {
            function,
            payload,
            format: format.code(),
        })
    }
}
