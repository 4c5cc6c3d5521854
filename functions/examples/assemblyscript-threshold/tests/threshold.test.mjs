// The AssemblyScript threshold example, as built (build/threshold.wasm, `npm run build`), under
// the SDK's mock host: the behaviour of the Rust example (functions/examples/threshold), whose
// unit tests these mirror, plus JSON readings and the memory of a long-lived instance.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { decode, encode, encodeReading, hex } from "@kiri/sdk/testing/cbor.mjs";
import { checkModule } from "@kiri/sdk/testing/check-module.mjs";
import { ABI, loadFunction } from "@kiri/sdk/testing/host.mjs";

const MODULE = process.env.THRESHOLD_WASM ?? fileURLToPath(new URL("../build/threshold.wasm", import.meta.url));
const wasm = readFileSync(MODULE);

// The Rust tests' reading: sensor s1, unit C, uptime_ms 1.
const reading = (kind, value, extra = {}) => ({ sensor: "s1", kind, value, unit: "C", uptime_ms: 1, ...extra });
const run = (fn, kind, value) => fn.event("sensors/s1/x", encodeReading(reading(kind, value)));

test("the module would load on the gateway: kiri imports only, the ABI's exports", () => {
  const { problems, imports } = checkModule(wasm);
  assert.deepEqual(problems, []);
  assert.ok(imports.every((i) => i.module === "kiri"), imports.map((i) => `${i.module}.${i.name}`).join());
});

test("only readings above the limit raise alerts", async () => {
  const fn = await loadFunction(wasm, { config: { limit: "30" } });
  for (const v of [29.9, 30.0]) {
    const r = run(fn, "temperature", v);
    assert.equal(r.outcome, "ok");
    assert.deepEqual(r.emits, [], `${v}`);
  }
  const r = run(fn, "temperature", 30.5);
  assert.equal(r.outcome, "ok");
  assert.equal(r.emits.length, 1);
  assert.equal(r.emits[0].topic, "alerts/s1/temperature");
  assert.deepEqual(decode(r.emits[0].payload), { ...reading("temperature", 30.5), limit: 30 });
  // Byte for byte what the Rust example emits: the reading as Reading::encode_with writes it.
  assert.equal(hex(r.emits[0].payload), hex(encodeReading(reading("temperature", 30.5), { limit: 30 })));
});

test("other kinds are ignored unless configured", async () => {
  const fn = await loadFunction(wasm, { config: { limit: "50" } });
  assert.deepEqual(run(fn, "humidity", 80).emits, []);
  const humid = await loadFunction(wasm, { config: { limit: "50", kind: "humidity" } });
  const r = run(humid, "humidity", 80);
  assert.deepEqual(r.emits.map((e) => e.topic), ["alerts/s1/humidity"]);
  assert.deepEqual(run(humid, "temperature", 80).emits, []);
});

test("a missing limit is a clear failure", async () => {
  for (const config of [{}, { limit: "abc" }, { limit: "30 C" }, { limit: "" }]) {
    const fn = await loadFunction(wasm, { config });
    const r = run(fn, "temperature", 99);
    assert.equal(r.outcome, "error");
    assert.equal(r.code, 3, JSON.stringify(config));
    assert.deepEqual(r.emits, []);
    assert.deepEqual(r.logs, [{ level: 0, text: "config key `limit` is missing or not a number" }]);
  }
});

test("limits are read as Rust reads them: integers, floats, exponents, spaces", async () => {
  for (const [limit, below, above] of [["30", 30, 30.01], ["-5.5", -5.5, -5.4], ["1e2", 100, 100.5], [" 21 ", 21, 22]]) {
    const fn = await loadFunction(wasm, { config: { limit } });
    assert.deepEqual(run(fn, "temperature", below).emits, [], limit);
    assert.equal(run(fn, "temperature", above).emits.length, 1, limit);
  }
});

test("a payload that is not a reading fails with code 1 and a warning", async () => {
  const fn = await loadFunction(wasm, { config: { limit: "30" } });
  const garbage = fn.event("sensors/s1/x", Uint8Array.from([0x68, 0x65, 0x6c]));
  assert.equal(garbage.code, 1);
  assert.deepEqual(garbage.logs, [{ level: 1, text: "sensors/s1/x: not a reading: Malformed" }]);
  const incomplete = fn.event("sensors/s1/x", encode(new Map([["sensor", "s1"], ["kind", "temperature"], ["value", 40]])));
  assert.equal(incomplete.code, 1);
  assert.deepEqual(incomplete.logs, [{ level: 1, text: 'sensors/s1/x: not a reading: Missing("unit")' }]);
});

test("an alert over 512 bytes fails with code 2, as the Rust example's buffer does", async () => {
  const fn = await loadFunction(wasm, { config: { limit: "30" } });
  const long = (n) => encodeReading({ sensor: "s".repeat(n), kind: "temperature", value: 40, unit: "C" });
  // The alert is 57 bytes plus the sensor's name (whose head takes 3 bytes from 256 on).
  assert.equal(fn.event("sensors/x", long(400)).emits.length, 1);
  const r = fn.event("sensors/x", long(500));
  assert.equal(r.outcome, "error");
  assert.equal(r.code, 2);
});

test("JSON readings (a trigger with format = \"json\") raise the same alerts", async () => {
  const fn = await loadFunction(wasm, { config: { limit: "30" } });
  const json = (v) => JSON.stringify({ sensor: "s1", kind: "temperature", value: v, unit: "C", seq: 9 });
  assert.deepEqual(fn.event("sensors/s1/t", json(29), { format: ABI.FORMAT.JSON }).emits, []);
  const r = fn.event("sensors/s1/t", json(31.25), { format: ABI.FORMAT.JSON });
  assert.equal(r.emits.length, 1);
  assert.equal(r.emits[0].topic, "alerts/s1/temperature");
  // The alert is a CBOR reading either way.
  assert.equal(
    hex(r.emits[0].payload),
    hex(encodeReading({ sensor: "s1", kind: "temperature", value: 31.25, unit: "C", seq: 9 }, { limit: 30 })),
  );
  const bad = fn.event("sensors/s1/t", '{"sensor":"s1"}', { format: ABI.FORMAT.JSON });
  assert.equal(bad.code, 1);
  assert.match(bad.logs[0].text, /not a reading: Missing\("kind"\)/);
});

test("a topic outside the emit list fails the invocation with the host's code", async () => {
  const fn = await loadFunction(wasm, { config: { limit: "30" }, emitAllowed: (t) => !t.startsWith("alerts/") });
  const r = run(fn, "temperature", 40);
  assert.equal(r.outcome, "error");
  assert.equal(r.code, ABI.DENIED);
});

test("values as CBOR integers and half floats compare like the Rust decoder's", async () => {
  const fn = await loadFunction(wasm, { config: { limit: "30" } });
  // {"sensor": "s1", "kind": "temperature", "unit": "C", "value": <the given item>}
  const head = encode(new Map([["sensor", "s1"], ["kind", "temperature"], ["unit", "C"], ["value", 0]]));
  const withValue = (...item) => Uint8Array.from([...head.subarray(0, head.length - 1), ...item]);
  assert.equal(fn.event("s", withValue(0x18, 31)).emits.length, 1, "integer 31");
  assert.equal(fn.event("s", withValue(0x18, 30)).emits.length, 0, "integer 30");
  assert.equal(fn.event("s", withValue(0x38, 0x1d)).emits.length, 0, "integer -30");
  const r = fn.event("s", withValue(0xf9, 0x4f, 0xc0)); // 31.0 as a half float
  assert.equal(r.emits.length, 1, "half float 31");
  assert.equal(decode(r.emits[0].payload).value, 31);
});

test("memory stays flat over 20,000 events on one instance", async () => {
  const fn = await loadFunction(wasm, { config: { limit: "30" } });
  for (let i = 0; i < 100; i++) run(fn, "temperature", 25 + (i % 10));
  const warm = fn.memoryBytes;
  for (let i = 0; i < 20000; i++) {
    const r = run(fn, "temperature", 25 + (i % 10));
    if (r.outcome !== "ok") assert.fail(`event ${i}: ${r.outcome} ${r.error ?? r.code}`);
  }
  assert.equal(fn.memoryBytes, warm);
  assert.equal(fn.starts, 1);
});
