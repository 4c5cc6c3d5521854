// The Kiri ABI, version 1 (docs/writing-functions.md, "The ABI, version 1"): the host calls a
// module may import from the module "kiri", and the numbers they use. Pointers are offsets into
// the module's memory (`usize`, 32 bits on wasm32); lengths are `i32`.
//
// A declaration becomes an import only when the module uses it, so a function that never calls
// `input_format`, `caller` or `config_json` still loads on a gateway older than those additions.

/** The ABI version `kiri_abi_version` returns. */
export const ABI_VERSION: i32 = 1;

// Result codes: host calls return a non-negative number on success, or one of these.
/** Success. Also what an event handler returns when it succeeded. */
export const OK: i32 = 0;
/** The topic is over 1024 bytes, the payload over `broker.max_message_bytes`, or (`kv_put`) the value over `limits.kv_max_value_bytes`. */
export const TOO_LARGE: i32 = -1;
/** The invocation used up its outputs (`max_outputs`, `max_output_bytes`) or key-value writes, or the namespace is full. */
export const LIMIT: i32 = -2;
/** (`config`, `kv_get`) the key is not set; (`caller`) no verified caller. */
export const NOT_FOUND: i32 = -3;
/** The topic is not in the function's `emit`/`publish` allow-list, or outside an HTTP caller's `prefix:` scopes. */
export const DENIED: i32 = -5;
/** An empty or malformed topic (`+`, `#`, NUL, not UTF-8), or an empty or over-long key. */
export const INVALID: i32 = -6;

// Log levels for `log`.
/** Something failed. */
export const LEVEL_ERROR: i32 = 0;
/** Something looks wrong. */
export const LEVEL_WARN: i32 = 1;
/** Normal operation. */
export const LEVEL_INFO: i32 = 2;
/** Detail for debugging. */
export const LEVEL_DEBUG: i32 = 3;

// Payload formats, as `input_format` reports them.
/** No payload: a timer tick. */
export const FORMAT_NONE: i32 = 0;
/** One CBOR data item. */
export const FORMAT_CBOR: i32 = 1;
/** One JSON value, UTF-8. */
export const FORMAT_JSON: i32 = 2;
/** UTF-8 text. */
export const FORMAT_TEXT: i32 = 3;
/** Any bytes (also an HTTP invocation's body). */
export const FORMAT_BYTES: i32 = 4;
/** A Sparkplug B payload (protobuf), as it came. */
export const FORMAT_SPARKPLUG_B: i32 = 5;

/** Queues a result for the cloud (`<cloud.topic_prefix>/<topic>`), committed with the invocation. */
// @ts-ignore: decorator
@external("kiri", "emit")
export declare function kiri_emit(topicPtr: usize, topicLen: i32, payloadPtr: usize, payloadLen: i32): i32;

/** Queues a message for the local broker, published after the invocation commits. */
// @ts-ignore: decorator
@external("kiri", "publish")
export declare function kiri_publish(topicPtr: usize, topicLen: i32, payloadPtr: usize, payloadLen: i32): i32;

/** Sets the response body of an HTTP invocation (topic `$http`); the last call wins. */
// @ts-ignore: decorator
@external("kiri", "respond")
export declare function kiri_respond(bodyPtr: usize, bodyLen: i32): i32;

/** Writes a log line at `level` (0 error, 1 warn, 2 info, 3 debug). */
// @ts-ignore: decorator
@external("kiri", "log")
export declare function kiri_log(level: i32, msgPtr: usize, msgLen: i32): void;

/** Wall-clock time, ms since the Unix epoch (may be unset on a board without a clock). */
// @ts-ignore: decorator
@external("kiri", "now_ms")
export declare function kiri_now_ms(): i64;

/** Reads a configuration value: writes at most `outCap` bytes, returns its full length or NOT_FOUND. */
// @ts-ignore: decorator
@external("kiri", "config")
export declare function kiri_config(keyPtr: usize, keyLen: i32, outPtr: usize, outCap: i32): i32;

/**
 * Reads a configuration value as JSON, typed as the configuration wrote it (`30.5`,
 * `"temperature"`, `["a","b"]`); an empty key gives the whole table. Answers like `config`.
 * An addition to ABI v1.
 */
// @ts-ignore: decorator
@external("kiri", "config_json")
export declare function kiri_config_json(keyPtr: usize, keyLen: i32, outPtr: usize, outCap: i32): i32;

/**
 * For an HTTP call (topic `$http`): the request as one JSON object, `{"method", "path",
 * "query", "headers"}`; writes at most `outCap` bytes, returns the full length, or NOT_FOUND
 * for other events. An addition to ABI v1.
 */
// @ts-ignore: decorator
@external("kiri", "http_request")
export declare function kiri_http_request(outPtr: usize, outCap: i32): i32;

/**
 * For an HTTP call: the answer's status (200 to 599) and headers (a JSON object of text
 * values, or length 0 for none); the body is `respond`'s. INVALID for a status or header the
 * gateway does not send. An addition to ABI v1.
 */
// @ts-ignore: decorator
@external("kiri", "http_response")
export declare function kiri_http_response(status: i32, headersPtr: usize, headersLen: i32): i32;

/** Reads a key of the function's state: writes at most `outCap` bytes, returns the full length or NOT_FOUND. */
// @ts-ignore: decorator
@external("kiri", "kv_get")
export declare function kiri_kv_get(keyPtr: usize, keyLen: i32, outPtr: usize, outCap: i32): i32;

/** Sets a key of the function's state (committed with the invocation). */
// @ts-ignore: decorator
@external("kiri", "kv_put")
export declare function kiri_kv_put(keyPtr: usize, keyLen: i32, valPtr: usize, valLen: i32): i32;

/** Deletes a key of the function's state (committed with the invocation). */
// @ts-ignore: decorator
@external("kiri", "kv_delete")
export declare function kiri_kv_delete(keyPtr: usize, keyLen: i32): i32;

/** The keys starting with a prefix, each as a 2-byte big-endian length and the key; returns the full length. */
// @ts-ignore: decorator
@external("kiri", "kv_list")
export declare function kiri_kv_list(prefixPtr: usize, prefixLen: i32, outPtr: usize, outCap: i32): i32;

/** The verified `sub` of an HTTP invocation's JWT: writes at most `outCap` bytes, returns its length or NOT_FOUND. */
// @ts-ignore: decorator
@external("kiri", "caller")
export declare function kiri_caller(outPtr: usize, outCap: i32): i32;

/** The format of the event's payload as the function received it (FORMAT_*). An addition to ABI v1. */
// @ts-ignore: decorator
@external("kiri", "input_format")
export declare function kiri_input_format(): i32;
