// Typed wrappers around the host calls (abi.ts): strings in and out as UTF-8, buffers sized for
// the answer. Each returns what the host returned: a non-negative number on success, else a
// result code (TOO_LARGE, LIMIT, NOT_FOUND, DENIED, INVALID).

import {
  kiri_caller,
  kiri_config,
  kiri_config_json,
  kiri_emit,
  kiri_http_request,
  kiri_http_response,
  kiri_input_format,
  kiri_kv_delete,
  kiri_kv_get,
  kiri_kv_list,
  kiri_kv_put,
  kiri_log,
  kiri_now_ms,
  kiri_publish,
  kiri_respond,
} from "./abi";
import { parseNumber } from "./number";

/** Sends a result to the cloud, on `<cloud.topic_prefix>/<topic>`; committed with this invocation. */
export function emit(topic: string, payload: Uint8Array): i32 {
  const t = String.UTF8.encode(topic);
  return kiri_emit(changetype<usize>(t), t.byteLength, payload.dataStart, payload.length);
}

/** Publishes a message on the gateway's local broker after this invocation commits. */
export function publish(topic: string, payload: Uint8Array): i32 {
  const t = String.UTF8.encode(topic);
  return kiri_publish(changetype<usize>(t), t.byteLength, payload.dataStart, payload.length);
}

/** Sets the response body of an HTTP invocation (topic `$http`). Ignored for other events. */
export function respond(body: Uint8Array): i32 {
  return kiri_respond(body.dataStart, body.length);
}

/** Writes a log line at `level` (LEVEL_ERROR, LEVEL_WARN, LEVEL_INFO, LEVEL_DEBUG). */
export function log(level: i32, message: string): void {
  const m = String.UTF8.encode(message);
  kiri_log(level, changetype<usize>(m), m.byteLength);
}

/** Wall-clock time in milliseconds since the Unix epoch. */
export function nowMs(): i64 {
  return kiri_now_ms();
}

/** The format of the event's payload as this function received it (FORMAT_*). */
export function inputFormat(): i32 {
  return kiri_input_format();
}

/** The configuration value `key` (from the function's `config` table), or null if it is not set. */
export function config(key: string): string | null {
  const k = String.UTF8.encode(key);
  const value = readAnswer(changetype<usize>(k), k.byteLength, ANSWER_CONFIG);
  if (value === null) return null;
  return String.UTF8.decodeUnsafe(value.dataStart, value.length);
}

/**
 * The configuration value `key` as JSON text, typed as the configuration wrote it: `limit =
 * 30.5` gives `30.5`, `kind = "temperature"` gives `"temperature"` (quoted), a table gives an
 * object. An empty key gives the whole `config` table. Null if the key is not set. Read a
 * member with `jsonNumber` / `jsonString`. (The `config_json` host call, an addition to ABI v1:
 * a module that uses it is refused by gateways older than it.)
 */
export function configJson(key: string): string | null {
  const k = String.UTF8.encode(key);
  const value = readAnswer(changetype<usize>(k), k.byteLength, ANSWER_CONFIG_JSON);
  if (value === null) return null;
  return String.UTF8.decodeUnsafe(value.dataStart, value.length);
}

/**
 * The configuration value `key` as a number, or NaN if it is not set or not a number.
 * Accepts what Rust's `str::parse::<f64>` accepts after trimming (`30`, `-2.5`, `1e3`, `.5`,
 * `inf`), as the Rust SDK's `config_parse` does; "nan" reads as NaN, like an absent key.
 */
export function configNumber(key: string): f64 {
  const value = config(key);
  if (value === null) return NaN;
  return parseNumber(value);
}

/** The value of `key` in the function's state, or null if it is not set. */
export function kvGet(key: string): Uint8Array | null {
  const k = String.UTF8.encode(key);
  return readAnswer(changetype<usize>(k), k.byteLength, ANSWER_KV_GET);
}

/** Sets `key` to `value` in the function's state (committed with this invocation). */
export function kvPut(key: string, value: Uint8Array): i32 {
  const k = String.UTF8.encode(key);
  return kiri_kv_put(changetype<usize>(k), k.byteLength, value.dataStart, value.length);
}

/** Deletes `key` from the function's state (deleting a missing key is not an error). */
export function kvDelete(key: string): i32 {
  const k = String.UTF8.encode(key);
  return kiri_kv_delete(changetype<usize>(k), k.byteLength);
}

/**
 * The keys of the function's state that start with `prefix`, in byte order (at most 1024), or
 * null if the host refused (an HTTP caller's token does not grant that prefix, say).
 */
export function kvList(prefix: string): Array<string> | null {
  const p = String.UTF8.encode(prefix);
  const list = readAnswer(changetype<usize>(p), p.byteLength, ANSWER_KV_LIST);
  if (list === null) return null;
  const keys = new Array<string>();
  let at = 0;
  while (at + 2 <= list.length) {
    const len = (<i32>list[at] << 8) | <i32>list[at + 1];
    at += 2;
    if (at + len > list.length) break;
    keys.push(String.UTF8.decodeUnsafe(list.dataStart + at, len));
    at += len;
  }
  return keys;
}

/**
 * For an HTTP call (topic `$http`), the request as JSON text: `{"method":"GET","path":"/x",
 * "query":"a=1","headers":{...}}` (read a member with `jsonString`); null for other events.
 * (The `http_request` host call, an addition to ABI v1.)
 */
export function httpRequest(): string | null {
  let out = new Uint8Array(512);
  let n = kiri_http_request(out.dataStart, out.length);
  if (n < 0) return null;
  if (n > out.length) {
    out = new Uint8Array(n);
    n = kiri_http_request(out.dataStart, out.length);
    if (n < 0 || n > out.length) return null;
  }
  return String.UTF8.decodeUnsafe(out.dataStart, n);
}

/**
 * Sets the status (200 to 599) and headers (JSON text such as
 * `{"content-type":"application/json"}`, or "" for none) of an HTTP call's answer; the body is
 * `respond`'s. Returns OK, or INVALID. (The `http_response` host call, an addition to ABI v1.)
 */
export function httpResponse(status: i32, headersJson: string): i32 {
  const h = String.UTF8.encode(headersJson);
  return kiri_http_response(status, changetype<usize>(h), h.byteLength);
}

/** The verified identity (`sub`) of the HTTP caller, or null (MQTT events, timers, admin token). */
export function caller(): string | null {
  const out = new Uint8Array(256);
  const n = kiri_caller(out.dataStart, out.length);
  if (n < 0 || n > out.length) return null;
  return String.UTF8.decodeUnsafe(out.dataStart, n);
}

// The host calls that answer "the full length, at most `cap` bytes written": ask with a buffer
// that usually fits, and once more with the exact size when it did not.
const ANSWER_CONFIG: i32 = 0;
const ANSWER_KV_GET: i32 = 1;
const ANSWER_KV_LIST: i32 = 2;
const ANSWER_CONFIG_JSON: i32 = 3;

function ask(which: i32, keyPtr: usize, keyLen: i32, out: Uint8Array): i32 {
  if (which == ANSWER_CONFIG) return kiri_config(keyPtr, keyLen, out.dataStart, out.length);
  if (which == ANSWER_KV_GET) return kiri_kv_get(keyPtr, keyLen, out.dataStart, out.length);
  if (which == ANSWER_CONFIG_JSON) return kiri_config_json(keyPtr, keyLen, out.dataStart, out.length);
  return kiri_kv_list(keyPtr, keyLen, out.dataStart, out.length);
}

function readAnswer(keyPtr: usize, keyLen: i32, which: i32): Uint8Array | null {
  let out = new Uint8Array(256);
  let n = ask(which, keyPtr, keyLen, out);
  if (n < 0) return null;
  if (n > out.length) {
    out = new Uint8Array(n);
    n = ask(which, keyPtr, keyLen, out);
    if (n < 0 || n > out.length) return null;
  }
  return out.subarray(0, n);
}
