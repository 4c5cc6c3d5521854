// `threshold`, in AssemblyScript: emits an alert for every reading of one kind whose value is
// above a limit. The same function as functions/examples/threshold (Rust), which it mirrors:
//
// Config: `limit` (number, required), `kind` (default "temperature"). The alert is the
// reading plus a `limit` field, sent to `alerts/<sensor>/<kind>`. Readings at or below the
// limit, and readings of other kinds, produce nothing. Readings may come as CBOR or, on a
// trigger with `format = "json"`, as JSON.

import { config, configNumber, emit, field, handler, LEVEL_ERROR, LEVEL_WARN, log, OK, Reading } from "@kiri/sdk/assembly";

export * from "@kiri/sdk/assembly/exports";

/** The payload is not a reading. */
const NOT_A_READING: i32 = 1;
/** The alert does not fit the output buffer (512 bytes, as in the Rust example). */
const TOO_BIG: i32 = 2;
/** The `limit` configuration value is missing or not a number. */
const NO_LIMIT: i32 = 3;

const MAX_ALERT_BYTES: i32 = 512;

function onEvent(topic: string, payload: Uint8Array, receivedAtMs: i64): i32 {
  const limit = configNumber("limit");
  if (isNaN(limit)) {
    log(LEVEL_ERROR, "config key `limit` is missing or not a number");
    return NO_LIMIT;
  }
  const reading = Reading.decodePayload(payload);
  if (reading === null) {
    log(LEVEL_WARN, topic + ": not a reading: " + Reading.lastError);
    return NOT_A_READING;
  }
  const configured = config("kind");
  const kind = configured !== null ? configured : "temperature";
  if (reading.kind != kind || reading.value <= limit) return OK;
  const alert = reading.encodeWith([field("limit", limit)], MAX_ALERT_BYTES);
  if (alert === null) return TOO_BIG;
  // A refusal by the host (a topic outside the function's `emit` list, say) fails the
  // invocation with the host's code, as the Rust example does.
  const code = emit("alerts/" + reading.sensor + "/" + reading.kind, alert);
  return code < 0 ? code : OK;
}

handler(onEvent);
