// A stand-in for the Kiri gateway, to unit-test a function module under Node.js: it offers the
// "kiri" imports of ABI v1 and delivers events the way the gateway does
// (docs/writing-functions.md): kiri_alloc(topic_len + payload_len), the topic and payload
// written there, kiri_on_event; outputs and key-value writes kept only when the invocation
// succeeds; a fresh instance after a trap.
//
//   import { loadFunction } from "@kiri/sdk/testing/host.mjs";
//   const fn = await loadFunction("build/threshold.wasm", { config: { limit: "30" } });
//   const r = fn.event("sensors/s1/temperature", payload);   // { code, outcome, emits, logs, ... }

import { readFileSync } from "node:fs";

export const ABI = {
  OK: 0,
  TOO_LARGE: -1,
  LIMIT: -2,
  NOT_FOUND: -3,
  DENIED: -5,
  INVALID: -6,
  FORMAT: { NONE: 0, CBOR: 1, JSON: 2, TEXT: 3, BYTES: 4, SPARKPLUG_B: 5 },
};

/**
 * The host calls of the "kiri" module. (The gateway also offers WASI preview 1; a module built
 * with the SDK never imports it, and this mock does not provide it.)
 */
export const HOST_IMPORTS = [
  "emit",
  "publish",
  "respond",
  "log",
  "now_ms",
  "config",
  "config_json",
  "kv_get",
  "kv_put",
  "kv_delete",
  "kv_list",
  "caller",
  "input_format",
  "http_request",
  "http_response",
];

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A trap raised by the host (a bad pointer, say), as the gateway's would be. */
export class HostTrap extends Error {}

/** Why a module would not load on this mock host, or [] if it would (names and kinds only). */
export function loadProblems(module) {
  const problems = [];
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.module !== "kiri" || !HOST_IMPORTS.includes(imp.name) || imp.kind !== "function") {
      problems.push(`imports ${imp.module}.${imp.name} (${imp.kind}), which this mock host does not offer`);
    }
  }
  const exports = new Map(WebAssembly.Module.exports(module).map((e) => [e.name, e.kind]));
  for (const [name, kind] of [
    ["memory", "memory"],
    ["kiri_abi_version", "function"],
    ["kiri_alloc", "function"],
    ["kiri_on_event", "function"],
  ]) {
    if (exports.get(name) !== kind) problems.push(`does not export ${kind} ${name}`);
  }
  return problems;
}

function topicProblem(bytes) {
  if (bytes.length === 0) return ABI.INVALID;
  if (bytes.length > 1024) return ABI.TOO_LARGE;
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return ABI.INVALID;
  }
  if (/[+#\0]/.test(text)) return ABI.INVALID;
  return 0;
}

function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

// JSON with object keys in order, as the gateway writes a configuration table.
function sortedJson(v) {
  if (Array.isArray(v)) return `[${v.map(sortedJson).join(",")}]`;
  if (v !== null && typeof v === "object") {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${sortedJson(v[k])}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

// A configuration value as the `config` call gives it: text as it is, numbers and booleans
// written out, arrays and tables as JSON.
function configText(v) {
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  return sortedJson(v);
}

/**
 * The host side: configuration, key-value state, and what the current invocation did.
 * Options: config (key -> value as the TOML table would hold it: `{ limit: 30, kind: "t" }`;
 * `config` gives it as text, `config_json` as JSON, as the gateway does),
 * kv (Map of string key -> Uint8Array), emitAllowed / publishAllowed (topic -> bool),
 * maxMessageBytes, maxOutputs, kvMaxValueBytes, nowMs (() -> number), caller (string or null).
 */
export class MockHost {
  constructor(options = {}) {
    this.config = new Map(Object.entries(options.config ?? {}));
    this.kv = new Map(options.kv ?? []);
    this.emitAllowed = options.emitAllowed ?? (() => true);
    this.publishAllowed = options.publishAllowed ?? (() => false);
    this.maxMessageBytes = options.maxMessageBytes ?? 262144;
    this.maxOutputs = options.maxOutputs ?? 64;
    this.kvMaxValueBytes = options.kvMaxValueBytes ?? 65536;
    this.nowMs = options.nowMs ?? (() => Date.now());
    this.callerSub = options.caller ?? null;
    /** The HTTP request `http_request` answers with (an object), or null: not an HTTP call. */
    this.httpRequest = options.httpRequest ?? null;
    this.memory = null;
    this.begin(ABI.FORMAT.CBOR);
    /** Every log line of every invocation: { level, text }. */
    this.allLogs = [];
  }

  /** Starts an invocation: clears what the previous one did. */
  begin(format) {
    this.format = format;
    this.emits = [];
    this.publishes = [];
    this.response = null;
    this.httpAnswer = null;
    this.logs = [];
    this.kvWrites = new Map(); // key -> Uint8Array, or null for a delete
  }

  bytes(ptr, len) {
    const mem = new Uint8Array(this.memory.buffer);
    if (ptr < 0 || len < 0 || ptr + len > mem.length) {
      throw new HostTrap(`pointer ${ptr}+${len} outside the module's memory (${mem.length} bytes)`);
    }
    return mem.slice(ptr, ptr + len);
  }

  // Writes at most `cap` bytes of `value` at `ptr`; returns the full length.
  answer(value, ptr, cap) {
    const mem = new Uint8Array(this.memory.buffer);
    if (ptr < 0 || cap < 0 || ptr + cap > mem.length) {
      throw new HostTrap(`out buffer ${ptr}+${cap} outside the module's memory`);
    }
    mem.set(value.subarray(0, Math.min(cap, value.length)), ptr);
    return value.length;
  }

  kvValue(key) {
    return this.kvWrites.has(key) ? this.kvWrites.get(key) : (this.kv.get(key) ?? null);
  }

  output(list, allowed, tp, tl, pp, pl) {
    const topicBytes = this.bytes(tp, tl);
    const payload = this.bytes(pp, pl);
    const problem = topicProblem(topicBytes);
    if (problem) return problem;
    if (payload.length > this.maxMessageBytes) return ABI.TOO_LARGE;
    const topic = decoder.decode(topicBytes);
    if (!allowed(topic)) return ABI.DENIED;
    if (this.emits.length + this.publishes.length >= this.maxOutputs) return ABI.LIMIT;
    list.push({ topic, payload });
    return 0;
  }

  /** The import object for WebAssembly.instantiate. */
  imports() {
    return {
      kiri: {
        emit: (tp, tl, pp, pl) => this.output(this.emits, this.emitAllowed, tp, tl, pp, pl),
        publish: (tp, tl, pp, pl) => this.output(this.publishes, this.publishAllowed, tp, tl, pp, pl),
        respond: (p, l) => {
          const body = this.bytes(p, l);
          if (body.length > this.maxMessageBytes) return ABI.TOO_LARGE;
          this.response = body;
          return 0;
        },
        log: (level, p, l) => {
          const line = { level, text: decoder.decode(this.bytes(p, l)) };
          this.logs.push(line);
          this.allLogs.push(line);
        },
        now_ms: () => BigInt(Math.trunc(this.nowMs())),
        config: (kp, kl, op, oc) => {
          const key = decoder.decode(this.bytes(kp, kl));
          if (kl > 256 || !this.config.has(key)) return ABI.NOT_FOUND;
          return this.answer(encoder.encode(configText(this.config.get(key))), op, oc);
        },
        config_json: (kp, kl, op, oc) => {
          const key = decoder.decode(this.bytes(kp, kl));
          if (kl === 0) return this.answer(encoder.encode(sortedJson(Object.fromEntries(this.config))), op, oc);
          if (kl > 256 || !this.config.has(key)) return ABI.NOT_FOUND;
          return this.answer(encoder.encode(sortedJson(this.config.get(key))), op, oc);
        },
        kv_get: (kp, kl, op, oc) => {
          if (kl < 1 || kl > 256) return ABI.INVALID;
          const value = this.kvValue(decoder.decode(this.bytes(kp, kl)));
          if (value === null) return ABI.NOT_FOUND;
          return this.answer(value, op, oc);
        },
        kv_put: (kp, kl, vp, vl) => {
          if (kl < 1 || kl > 256) return ABI.INVALID;
          const key = decoder.decode(this.bytes(kp, kl));
          const value = this.bytes(vp, vl);
          if (value.length > this.kvMaxValueBytes) return ABI.TOO_LARGE;
          this.kvWrites.set(key, value);
          return 0;
        },
        kv_delete: (kp, kl) => {
          if (kl < 1 || kl > 256) return ABI.INVALID;
          this.kvWrites.set(decoder.decode(this.bytes(kp, kl)), null);
          return 0;
        },
        kv_list: (pp, pl, op, oc) => {
          const prefix = this.bytes(pp, pl);
          const keys = new Set([...this.kv.keys(), ...this.kvWrites.keys()]);
          const matching = [...keys]
            .filter((k) => this.kvValue(k) !== null)
            .map((k) => encoder.encode(k))
            .filter((k) => compareBytes(k.subarray(0, prefix.length), prefix) === 0)
            .sort(compareBytes)
            .slice(0, 1024);
          const out = [];
          for (const k of matching) out.push(k.length >> 8, k.length & 0xff, ...k);
          return this.answer(Uint8Array.from(out), op, oc);
        },
        caller: (op, oc) => {
          if (this.callerSub === null) return ABI.NOT_FOUND;
          return this.answer(encoder.encode(this.callerSub), op, oc);
        },
        input_format: () => this.format,
        http_request: (op, oc) => {
          if (this.httpRequest === null) return ABI.NOT_FOUND;
          return this.answer(encoder.encode(JSON.stringify(this.httpRequest)), op, oc);
        },
        http_response: (status, hp, hl) => {
          if (status < 200 || status > 599) return ABI.INVALID;
          let headers = {};
          if (hl > 0) {
            try {
              headers = JSON.parse(decoder.decode(this.bytes(hp, hl)));
            } catch {
              return ABI.INVALID;
            }
          }
          this.httpAnswer = { status, headers };
          return 0;
        },
      },
    };
  }

  /** Commits the invocation's key-value writes (the gateway does so when it succeeds). */
  commit() {
    for (const [k, v] of this.kvWrites) {
      if (v === null) this.kv.delete(k);
      else this.kv.set(k, v);
    }
  }
}

/** A loaded function module with its mock host. */
export class FunctionUnderTest {
  constructor(module, host) {
    this.module = module;
    this.host = host;
    this.instance = null;
    /** Instances started (the first, and one after each trap). */
    this.starts = 0;
  }

  start() {
    this.instance = new WebAssembly.Instance(this.module, this.host.imports());
    this.host.memory = this.instance.exports.memory;
    this.starts++;
  }

  /** The module's memory size, bytes. */
  get memoryBytes() {
    if (!this.instance) this.start();
    return this.instance.exports.memory.buffer.byteLength;
  }

  /**
   * Delivers one event. `payload`: Uint8Array or string (UTF-8). Options: format (the
   * input_format answer; default CBOR, NONE for `$timer`), receivedAtMs.
   * Returns { code, outcome ("ok", "error", "trap", "alloc"), error, emits, publishes,
   * response, logs }; emits and publishes only count when the outcome is "ok".
   */
  event(topic, payload, options = {}) {
    const topicBytes = encoder.encode(topic);
    const body = typeof payload === "string" ? encoder.encode(payload) : (payload ?? new Uint8Array(0));
    const format = options.format ?? (topic === "$timer" ? ABI.FORMAT.NONE : ABI.FORMAT.CBOR);
    if (!this.instance) this.start();
    const host = this.host;
    host.begin(format);
    const ex = this.instance.exports;
    const result = (outcome, code, error) => {
      const ok = outcome === "ok";
      if (ok) host.commit();
      if (outcome === "trap") this.instance = null; // the gateway discards a trapped instance
      return {
        code,
        outcome,
        error,
        emits: ok ? host.emits : [],
        publishes: ok ? host.publishes : [],
        response: ok ? host.response : null,
        http: ok ? host.httpAnswer : null,
        logs: host.logs,
      };
    };
    try {
      const len = topicBytes.length + body.length;
      const ptr = ex.kiri_alloc(len);
      const mem = new Uint8Array(ex.memory.buffer);
      if (ptr === 0 || ptr < 0 || ptr + len > mem.length) return result("alloc", null, `kiri_alloc returned ${ptr}`);
      mem.set(topicBytes, ptr);
      mem.set(body, ptr + topicBytes.length);
      const at = BigInt(options.receivedAtMs ?? 1700000000000);
      const code = ex.kiri_on_event(ptr, topicBytes.length, ptr + topicBytes.length, body.length, at);
      return code === 0 ? result("ok", 0, null) : result("error", code, null);
    } catch (e) {
      if (e instanceof WebAssembly.RuntimeError || e instanceof HostTrap) return result("trap", null, e.message);
      throw e;
    }
  }
}

/**
 * Compiles a module (a path or bytes), refuses it if it imports anything but the "kiri" calls
 * or lacks the ABI's exports, and starts it with a MockHost made from `options`.
 */
export async function loadFunction(wasm, options = {}) {
  const bytes = typeof wasm === "string" ? readFileSync(wasm) : wasm;
  const module = await WebAssembly.compile(bytes);
  const problems = loadProblems(module);
  if (problems.length) throw new Error(`the module cannot load: ${problems.join("; ")}`);
  const fn = new FunctionUnderTest(module, new MockHost(options));
  fn.start();
  const version = fn.instance.exports.kiri_abi_version();
  if (version !== 1) throw new Error(`kiri_abi_version returned ${version}, not 1`);
  return fn;
}
