// The SDK's tests under Node.js (`npm test`): the AssemblyScript unit tests (tests/assembly),
// then the ABI glue, the host wrappers and the build settings, driven through the mock host.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { encode, encodeReading } from "../testing/cbor.mjs";
import { checkModule } from "../testing/check-module.mjs";
import { ABI, loadFunction } from "../testing/host.mjs";
import { compile, SDK_DIR } from "./build.mjs";

const wasm = await compile("tests/assembly/sdk.test.ts");
const module = await WebAssembly.compile(wasm);

const f64Of = (bytes) => new DataView(bytes.buffer, bytes.byteOffset, 8).getFloat64(0, true);
const text = (bytes) => new TextDecoder().decode(bytes);

// Each AssemblyScript test on a fresh instance; a failed assertion traps after logging why.
for (const { name } of WebAssembly.Module.exports(module).filter((e) => e.name.startsWith("test_"))) {
  test(`assembly: ${name.slice(5).replaceAll("_", " ")}`, async () => {
    const fn = await loadFunction(wasm);
    try {
      fn.instance.exports[name]();
    } catch (e) {
      const why = fn.host.allLogs.filter((l) => l.level === 0).map((l) => l.text);
      assert.fail(why.length ? why.join("\n") : `trapped without a log line: ${e.message}`);
    }
  });
}

test("the test module, built with the SDK's settings, imports only kiri calls", () => {
  const { problems, imports } = checkModule(wasm);
  assert.deepEqual(problems, []);
  // It uses abort (assert, throw), trace and Math.random: all three go to the kiri imports.
  const names = imports.map((i) => `${i.module}.${i.name}`);
  assert.ok(names.includes("kiri.log"), names.join());
  assert.ok(names.includes("kiri.now_ms"), names.join());
  assert.ok(!names.some((n) => n.startsWith("env.")), names.join());
});

test("events reach the handler: topic, payload and receipt time", async () => {
  const fn = await loadFunction(wasm);
  const r = fn.event("echo", Uint8Array.from([1, 2, 3]), { receivedAtMs: 1234567 });
  assert.equal(r.outcome, "ok");
  assert.deepEqual(r.emits.map((e) => [e.topic, [...e.payload]]), [["echo/1234567", [1, 2, 3]]]);
  const empty = fn.event("echo", new Uint8Array(0));
  assert.deepEqual([...empty.emits[0].payload], []);
});

test("a non-zero return fails the invocation and its emits are dropped", async () => {
  const fn = await loadFunction(wasm);
  const r = fn.event("fail", "x");
  assert.equal(r.outcome, "error");
  assert.equal(r.code, 7);
  assert.deepEqual(r.emits, []);
});

test("kiri_alloc grows for a large event, then reuses its region", async () => {
  const fn = await loadFunction(wasm, { maxMessageBytes: 2 << 20 });
  const ex = fn.instance.exports;
  const small = ex.kiri_alloc(10);
  assert.notEqual(small, 0);
  assert.equal(ex.kiri_alloc(10), small, "the same region for the next small event");
  const big = new Uint8Array(1 << 20).map((_, i) => i & 0xff);
  const r = fn.event("echo", big);
  assert.equal(r.outcome, "ok");
  assert.deepEqual(r.emits[0].payload, big);
  const bigPtr = ex.kiri_alloc(1 << 20);
  assert.equal(ex.kiri_alloc(100), bigPtr, "the grown region serves small events too");
  assert.equal(ex.kiri_alloc(-1), 0, "a negative length");
  assert.equal(ex.kiri_alloc(0x7fffffff), 0, "more than the runtime can allocate");
});

test("garbage of each event is collected: memory stays flat over 20,000 events", async () => {
  const fn = await loadFunction(wasm);
  for (let i = 0; i < 200; i++) assert.equal(fn.event("garbage", "x").outcome, "ok");
  const warm = fn.memoryBytes;
  for (let i = 0; i < 20000; i++) {
    const r = fn.event("garbage", "x");
    if (r.outcome !== "ok") assert.fail(`event ${i}: ${r.outcome}`);
  }
  // 20,000 events of ~100 KiB each would be ~2 GB without collection.
  assert.equal(fn.memoryBytes, warm, `memory grew from ${warm} to ${fn.memoryBytes} bytes`);
  assert.ok(warm <= 1 << 20, `warm memory ${warm} bytes`);
});

test("what the handler keeps in a global survives the collection", async () => {
  const fn = await loadFunction(wasm);
  for (let i = 1; i <= 50; i++) {
    fn.event("garbage", "x");
    const r = fn.event("keep", Uint8Array.from([i]));
    assert.equal(text(r.emits[0].payload), String(i));
  }
});

test("abort logs its message and location at error level, then traps", async () => {
  const fn = await loadFunction(wasm);
  const r = fn.event("abort", "xyz");
  assert.equal(r.outcome, "trap");
  assert.equal(r.logs.length, 1);
  assert.equal(r.logs[0].level, 0);
  assert.match(r.logs[0].text, /^abort: boom: payload of 3 bytes at tests\/assembly\/sdk\.test\.ts:\d+:\d+$/);
  const thrown = fn.event("throw", "");
  assert.equal(thrown.outcome, "trap");
  assert.match(thrown.logs[0].text, /^abort: thrown at tests\/assembly\/sdk\.test\.ts:\d+:\d+$/);
  // The next event runs on a fresh instance, as on the gateway.
  assert.equal(fn.event("echo", "ok").outcome, "ok");
  assert.equal(fn.starts, 3);
});

test("trace becomes a debug log line; Math.random is seeded from now_ms", async () => {
  const fn = await loadFunction(wasm, { nowMs: () => 1700000000000 });
  const r = fn.event("trace", "");
  assert.deepEqual(r.logs, [{ level: 3, text: "trace: hello 1.5, 2.0" }]);
  const a = f64Of(fn.event("random", "").emits[0].payload);
  const b = f64Of(fn.event("random", "").emits[0].payload);
  assert.ok(a >= 0 && a < 1 && b >= 0 && b < 1 && a !== b, `${a} ${b}`);
});

test("readings arrive as CBOR or JSON, as input_format says", async () => {
  const fn = await loadFunction(wasm);
  const cbor = encodeReading({ sensor: "s1", kind: "temperature", value: 21.5, unit: "C", seq: 7 });
  assert.equal(f64Of(fn.event("reading", cbor).emits[0].payload), 21.5);
  const json = '{"sensor":"s1","kind":"temperature","value":-4.25,"unit":"C"}';
  assert.equal(f64Of(fn.event("reading", json, { format: ABI.FORMAT.JSON }).emits[0].payload), -4.25);
  const asCbor = fn.event("reading", json, { format: ABI.FORMAT.CBOR });
  assert.equal(asCbor.code, 11);
  assert.deepEqual(asCbor.logs, [{ level: 2, text: "Malformed" }]);
});

test("JSON numbers read exactly as JavaScript reads them", async () => {
  const fn = await loadFunction(wasm);
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  const samples = ["0", "-0", "21.5", "0.1", "1e-7", "123456789012345678901234567890", "1.7976931348623157e308",
    "5e-324", "2.2250738585072014e-308", "9007199254740993", "-273.15", "1e400", "0.30000000000000004"];
  for (let i = 0; i < 2000; i++) {
    const v = (rand() - 0.5) * 10 ** Math.floor(rand() * 40 - 20);
    samples.push(String(v), v.toFixed(Math.floor(rand() * 6)), v.toExponential(Math.floor(rand() * 17)));
  }
  const wrong = [];
  for (const s of samples) {
    const got = f64Of(fn.event("json-number", `{"v": ${s}}`, { format: ABI.FORMAT.JSON }).emits[0].payload);
    if (!Object.is(got, Number(s))) wrong.push(`${s}: ${got} (JavaScript: ${Number(s)})`);
  }
  assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} of ${samples.length} differ`);
});

test("configuration values, short and long, as text, as numbers and as JSON", async () => {
  const long = "é".repeat(400);
  const emitted = (r) => Object.fromEntries(r.emits.map((e) => [e.topic, e.payload]));
  for (const [value, number] of [["30", 30], [" 30.5 ", 30.5], ["abc", NaN], [long, NaN], [30.5, 30.5], [-2, -2]]) {
    const fn = await loadFunction(wasm, { config: { text: value, number: value } });
    const got = emitted(fn.event("config", ""));
    assert.equal(text(got.text), String(value));
    assert.ok(Object.is(f64Of(got.number), number), `${value}`);
  }
  const table = { warn: 30, alarm: 40.5, name: "Küche", list: [1, "a"] };
  const fn = await loadFunction(wasm, { config: { table, number: 7 } });
  const got = emitted(fn.event("config", ""));
  assert.equal(text(got.table), '{"alarm":40.5,"list":[1,"a"],"name":"Küche","warn":30}');
  assert.equal(f64Of(got["table.warn"]), 30);
  assert.deepEqual(JSON.parse(text(got.all)), { number: 7, table });
  const none = await loadFunction(wasm);
  const r = emitted(none.event("config", ""));
  assert.equal(text(r.text), "(null)");
  assert.equal(text(r.table), "(null)");
  assert.equal(text(r.all), "{}");
  assert.ok(Number.isNaN(f64Of(r.number)));
});

test("key-value state: get, put, delete, list; committed only on success", async () => {
  const fn = await loadFunction(wasm);
  for (let i = 1; i <= 3; i++) {
    const r = fn.event("kv", "");
    assert.equal(r.outcome, "ok");
    assert.equal(text(r.emits[1].payload), String(i));
    assert.equal(text(r.emits[0].payload), "c2,count");
  }
  assert.deepEqual([...fn.host.kv.keys()].sort(), ["c2", "count"]);
});

test("caller, input_format, now_ms, publish and respond", async () => {
  const fn = await loadFunction(wasm, { caller: "alice", nowMs: () => 1700000000123, publishAllowed: (t) => t === "local/x" });
  const r = fn.event("host", "body", { format: ABI.FORMAT.BYTES });
  const got = Object.fromEntries(r.emits.map((e) => [e.topic, text(e.payload)]));
  assert.deepEqual(got, { caller: "alice", format: "4", now: "1700000000123", "publish-code": "0" });
  assert.deepEqual(r.publishes.map((p) => [p.topic, text(p.payload)]), [["local/x", "body"]]);
  assert.equal(text(r.response), "answer");
  const anonymous = await loadFunction(wasm);
  const denied = anonymous.event("host", "body");
  assert.equal(text(denied.emits[0].payload), "(none)");
  assert.equal(denied.emits.find((e) => e.topic === "publish-code").payload.length, 2); // "-5"
  assert.equal(text(denied.emits.find((e) => e.topic === "publish-code").payload), String(ABI.DENIED));
});

test("an HTTP call: the request through http_request, the answer's status and headers", async () => {
  const request = { method: "GET", path: "/items/7", query: "x=1", headers: { accept: "text/plain" } };
  const fn = await loadFunction(wasm, { httpRequest: request });
  const r = fn.event("$http", "", { format: ABI.FORMAT.BYTES });
  assert.equal(r.code, 0);
  assert.equal(text(r.response), "/items/7");
  assert.deepEqual(r.http, { status: 201, headers: { "content-type": "text/plain" } });
  const notHttp = await loadFunction(wasm);
  assert.equal(notHttp.event("$http", "").code, 12, "null outside an HTTP call");
});

test("a module without a handler fails its events with a log line", async () => {
  const fn = await loadFunction(await compile("tests/assembly/no-handler.ts"));
  const r = fn.event("x", "");
  assert.equal(r.code, 1);
  assert.match(r.logs[0].text, /no event handler/);
});

// A project that uses the SDK as a package, as docs/functions-assemblyscript.md sets one up.
function consumerProject(source, asconfig) {
  const dir = mkdtempSync(join(tmpdir(), "kiri-as-"));
  mkdirSync(join(dir, "assembly"));
  mkdirSync(join(dir, "node_modules", "@kiri"), { recursive: true });
  symlinkSync(SDK_DIR, join(dir, "node_modules", "@kiri", "sdk"));
  symlinkSync(join(SDK_DIR, "node_modules", "assemblyscript"), join(dir, "node_modules", "assemblyscript"));
  writeFileSync(join(dir, "assembly", "index.ts"), source);
  writeFileSync(join(dir, "asconfig.json"), JSON.stringify(asconfig));
  return dir;
}

const CONSUMER = `
import { emit, handler, OK } from "@kiri/sdk/assembly";
export * from "@kiri/sdk/assembly/exports";
function onEvent(topic: string, payload: Uint8Array, at: i64): i32 {
  trace("t", 1, Math.random());
  if (payload.length > 3) throw new Error("too long");
  return emit("out", payload) < 0 ? 1 : OK;
}
handler(onEvent);
`;

function asc(dir, ...args) {
  return execFileSync(process.execPath, [join(dir, "node_modules/assemblyscript/bin/asc.js"), ...args], {
    cwd: dir,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
}

test("asconfig.kiri.json routes abort, trace and seed to kiri imports in a package build", async () => {
  const dir = consumerProject(CONSUMER, {
    extends: "./node_modules/@kiri/sdk/asconfig.kiri.json",
    entries: ["assembly/index.ts"],
    targets: { release: { outFile: "build/fn.wasm" } },
  });
  try {
    asc(dir, "--config", "asconfig.json", "--target", "release");
    const bytes = readFileSync(join(dir, "build/fn.wasm"));
    const { problems, imports } = checkModule(bytes);
    assert.deepEqual(problems, []);
    assert.deepEqual(imports.map((i) => `${i.module}.${i.name}`).sort(), ["kiri.emit", "kiri.log", "kiri.now_ms"]);
    const fn = await loadFunction(bytes);
    assert.equal(fn.event("in", "abc").outcome, "ok");
    const r = fn.event("in", "abcd");
    assert.equal(r.outcome, "trap");
    assert.match(r.logs.at(-1).text, /^abort: too long at assembly\/index\.ts:\d+:\d+$/);
    // Without the SDK's settings the same source imports env.abort, env.trace and env.seed,
    // which the gateway refuses: the reason asconfig.kiri.json exists.
    rmSync(join(dir, "asconfig.json")); // asc reads ./asconfig.json when it is there
    asc(dir, "assembly/index.ts", "--outFile", "build/plain.wasm", "--runtime", "minimal");
    const plain = checkModule(readFileSync(join(dir, "build/plain.wasm")));
    assert.deepEqual(plain.imports.filter((i) => i.module === "env").map((i) => i.name).sort(), ["abort", "seed", "trace"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the stub runtime is refused at compile time", () => {
  const dir = consumerProject(CONSUMER, {
    extends: "./node_modules/@kiri/sdk/asconfig.kiri.json",
    entries: ["assembly/index.ts"],
    targets: { release: { outFile: "build/fn.wasm" } },
  });
  try {
    assert.throws(
      () => asc(dir, "--config", "asconfig.json", "--target", "release", "--runtime", "stub"),
      (e) => /the stub runtime never frees memory/.test(e.stderr + e.stdout),
    );
    assert.ok(!existsSync(join(dir, "build/fn.wasm")));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
