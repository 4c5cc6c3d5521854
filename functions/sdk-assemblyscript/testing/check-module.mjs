#!/usr/bin/env node
// Checks a function module against what the gateway requires when it loads one
// (docs/writing-functions.md, "What a module must export"), before it is deployed:
//
//   node check-module.mjs build/threshold.wasm
//
// - it imports only the "kiri" host calls, each with the ABI's type: nothing from "env" (which
//   the gateway refuses) and nothing from WASI (which the gateway offers, but which a module
//   built with this SDK never needs: an import of it means the build went wrong);
// - it exports memory, kiri_abi_version () -> i32, kiri_alloc (i32) -> i32 and
//   kiri_on_event (i32, i32, i32, i32, i64) -> i32, and has exactly one memory;
// - it is at most 32 MiB, and it starts and answers kiri_abi_version() = 1 under the mock host.
// Prints one line saying what it found; exits 1 with the problems otherwise.

import { readFileSync, realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { MockHost } from "./host.mjs";

const I32 = 0x7f;
const I64 = 0x7e;
const VALTYPES = { 0x7f: "i32", 0x7e: "i64", 0x7d: "f32", 0x7c: "f64", 0x7b: "v128", 0x70: "funcref", 0x6f: "externref" };

const sig = (params, results) => `(${params.map((t) => VALTYPES[t]).join(", ")}) -> (${results.map((t) => VALTYPES[t]).join(", ")})`;

export const EXPECTED_IMPORTS = {
  emit: sig([I32, I32, I32, I32], [I32]),
  publish: sig([I32, I32, I32, I32], [I32]),
  respond: sig([I32, I32], [I32]),
  log: sig([I32, I32, I32], []),
  now_ms: sig([], [I64]),
  config: sig([I32, I32, I32, I32], [I32]),
  config_json: sig([I32, I32, I32, I32], [I32]),
  kv_get: sig([I32, I32, I32, I32], [I32]),
  kv_put: sig([I32, I32, I32, I32], [I32]),
  kv_delete: sig([I32, I32], [I32]),
  kv_list: sig([I32, I32, I32, I32], [I32]),
  caller: sig([I32, I32], [I32]),
  input_format: sig([], [I32]),
  http_request: sig([I32, I32], [I32]),
  http_response: sig([I32, I32, I32], [I32]),
};

export const EXPECTED_EXPORTS = {
  kiri_abi_version: sig([], [I32]),
  kiri_alloc: sig([I32], [I32]),
  kiri_on_event: sig([I32, I32, I32, I32, I64], [I32]),
};

const MAX_MODULE_BYTES = 32 * 1024 * 1024;

// The parts of the binary format the check needs: types, imports, functions, memories, exports.
export function parseModule(bytes) {
  let pos = 8;
  const u32 = () => {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = bytes[pos++];
      if (b === undefined) throw new Error("truncated module");
      result += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (!(b & 0x80)) return result;
    }
  };
  const name = () => {
    const n = u32();
    const s = new TextDecoder().decode(bytes.subarray(pos, pos + n));
    pos += n;
    return s;
  };
  const limits = () => {
    const flags = bytes[pos++];
    u32();
    if (flags & 1) u32();
  };
  if (bytes.length < 8 || bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d) {
    throw new Error("not a WebAssembly module");
  }
  const types = [];
  const imports = [];
  const funcs = []; // type index of each function, imports first
  const exports = [];
  let memories = 0;
  while (pos < bytes.length) {
    const id = bytes[pos++];
    const size = u32();
    const end = pos + size;
    if (id === 1) {
      for (let n = u32(); n > 0; n--) {
        if (bytes[pos++] !== 0x60) throw new Error("unsupported type form");
        const params = Array.from({ length: u32() }, () => bytes[pos++]);
        const results = Array.from({ length: u32() }, () => bytes[pos++]);
        types.push(sig(params, results));
      }
    } else if (id === 2) {
      for (let n = u32(); n > 0; n--) {
        const module = name();
        const field = name();
        const kind = bytes[pos++];
        if (kind === 0) {
          const type = u32();
          funcs.push(type);
          imports.push({ module, name: field, kind: "function", type: types[type] });
        } else if (kind === 1) {
          pos++;
          limits();
          imports.push({ module, name: field, kind: "table" });
        } else if (kind === 2) {
          limits();
          memories++;
          imports.push({ module, name: field, kind: "memory" });
        } else {
          pos += 2;
          imports.push({ module, name: field, kind: "global" });
        }
      }
    } else if (id === 3) {
      for (let n = u32(); n > 0; n--) funcs.push(u32());
    } else if (id === 5) {
      memories += u32();
    } else if (id === 7) {
      for (let n = u32(); n > 0; n--) {
        const field = name();
        const kind = bytes[pos++];
        const index = u32();
        const kinds = ["function", "table", "memory", "global"];
        exports.push({ name: field, kind: kinds[kind], type: kind === 0 ? types[funcs[index]] : undefined });
      }
    }
    pos = end;
  }
  return { imports, exports, memories };
}

/**
 * What is wrong with `bytes` as a module built with the SDK ([] if nothing), and what the
 * module has: everything the gateway would refuse, and any import besides the "kiri" calls.
 */
export function checkModule(bytes) {
  const problems = [];
  if (bytes.length > MAX_MODULE_BYTES) problems.push(`${bytes.length} bytes: over the 32 MiB limit`);
  const { imports, exports, memories } = parseModule(bytes);
  for (const imp of imports) {
    const want = imp.module === "kiri" ? EXPECTED_IMPORTS[imp.name] : undefined;
    if (!want || imp.kind !== "function") {
      const why = imp.module === "env" ? "the gateway refuses it (build with asconfig.kiri.json)" : "a module built with the SDK imports only the kiri calls";
      problems.push(`imports ${imp.module}.${imp.name} (${imp.kind}): ${why}`);
    } else if (imp.type !== want) {
      problems.push(`imports kiri.${imp.name} as ${imp.type}, the ABI says ${want}`);
    }
  }
  if (memories !== 1) problems.push(`has ${memories} memories, not exactly one`);
  if (!exports.some((e) => e.name === "memory" && e.kind === "memory")) problems.push("does not export its memory as `memory`");
  for (const [name, want] of Object.entries(EXPECTED_EXPORTS)) {
    const e = exports.find((x) => x.name === name);
    if (!e || e.kind !== "function") problems.push(`does not export the function ${name}`);
    else if (e.type !== want) problems.push(`exports ${name} as ${e.type}, the ABI says ${want}`);
  }
  if (problems.length === 0) {
    try {
      const host = new MockHost();
      const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), host.imports());
      host.memory = instance.exports.memory;
      const version = instance.exports.kiri_abi_version();
      if (version !== 1) problems.push(`kiri_abi_version() returned ${version}, not 1`);
    } catch (e) {
      problems.push(`does not start: ${e.message}`);
    }
  }
  return { problems, imports, exports };
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  if (!file) {
    console.error("usage: check-module.mjs MODULE.wasm");
    process.exit(2);
  }
  const bytes = readFileSync(file);
  const { problems, imports } = checkModule(bytes);
  if (problems.length) {
    for (const p of problems) console.error(`${file}: ${p}`);
    process.exit(1);
  }
  const names = imports.map((i) => `${i.module}.${i.name}`).join(", ");
  console.log(`${file}: ok (${bytes.length} bytes, ABI v1; imports ${names || "nothing"})`);
}
