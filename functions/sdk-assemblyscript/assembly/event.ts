// The exports ABI v1 requires, around the author's handler, and the region the gateway writes
// each event into.

import { ABI_VERSION, LEVEL_ERROR } from "./abi";
import { log } from "./host";

// The stub runtime never frees: an instance lives for many events, and every event allocates
// (its topic, the payload's view, whatever the handler makes), so its memory would only grow
// until `memory.grow` fails and the instance traps. Refuse it when compiling.
// @ts-ignore: ASC_RUNTIME is a compile-time constant (0 stub, 1 minimal, 2 incremental)
if (ASC_RUNTIME == 0) {
  ERROR(
    "@kiri/sdk: the stub runtime never frees memory; build with --runtime minimal (asconfig.kiri.json)",
  );
}

/**
 * An event handler: the topic the event arrived on (`$timer` for a timer tick, `$http` for an
 * HTTP invocation), its payload, and when the gateway received it (ms since the Unix epoch).
 * Return OK (0) for success; any other number fails the invocation with that code recorded.
 */
export type Handler = (topic: string, payload: Uint8Array, receivedAtMs: i64) => i32;

let registered: Handler | null = null;

/** Code `kiri_on_event` returns when no handler was registered. */
export const NO_HANDLER: i32 = 1;

/**
 * Registers the function's event handler. Call it once, at the top level of the module's
 * entry file (it then runs when the instance starts), and re-export the ABI's functions there:
 *
 *     export * from "@kiri/sdk/assembly/exports";
 *     handler(onEvent);
 */
export function handler(fn: Handler): void {
  registered = fn;
}

// The gateway writes each event's topic and payload into the region `kiri_alloc` returns.
// It is one ArrayBuffer held by this global, so the collector never frees it and, like every
// AssemblyScript object, it never moves. It grows by doubling and is replaced only by a larger
// one (the old one is then garbage), so it stays under twice the largest event seen.
const MIN_SCRATCH: i32 = 1024;
const MAX_SCRATCH: i32 = (1 << 30) - 64; // under the runtime's largest block
let scratch: ArrayBuffer = new ArrayBuffer(0);

/** ABI: the version of the ABI this module implements. */
export function kiri_abi_version(): i32 {
  return ABI_VERSION;
}

/** ABI: room for `len` bytes, where the gateway writes the next event; 0 if there is none. */
export function kiri_alloc(len: i32): usize {
  if (len < 0 || len > MAX_SCRATCH) return 0;
  const cap = scratch.byteLength;
  if (len > cap || cap == 0) {
    let want = max(max(len, MIN_SCRATCH), cap <= MAX_SCRATCH / 2 ? cap * 2 : MAX_SCRATCH);
    scratch = new ArrayBuffer(want);
  }
  return changetype<usize>(scratch);
}

/**
 * ABI: handles one event. The topic becomes a string; the payload is a view of the region the
 * gateway wrote (valid during this event only: `payload.slice()` keeps a copy). After the
 * handler returns, the garbage of this event is collected, so an instance that runs for
 * millions of events keeps only what its globals hold.
 */
export function kiri_on_event(
  topicPtr: usize,
  topicLen: i32,
  payloadPtr: usize,
  payloadLen: i32,
  receivedAtMs: i64,
): i32 {
  const fn = registered;
  if (fn === null) {
    log(LEVEL_ERROR, "no event handler: call handler(onEvent) in the module's entry file");
    return NO_HANDLER;
  }
  if (topicLen < 0 || payloadLen < 0) return NO_HANDLER;
  const topic = String.UTF8.decodeUnsafe(topicPtr, <usize>topicLen);
  const base = changetype<usize>(scratch);
  let payload: Uint8Array;
  if (payloadPtr >= base && payloadPtr + <usize>payloadLen <= base + <usize>scratch.byteLength) {
    payload = Uint8Array.wrap(scratch, <i32>(payloadPtr - base), payloadLen);
  } else {
    // Not where kiri_alloc pointed (a host that does not follow the ABI's delivery): copy.
    payload = new Uint8Array(payloadLen);
    memory.copy(payload.dataStart, payloadPtr, <usize>payloadLen);
  }
  const code = fn(topic, payload, receivedAtMs);
  // The stack is unwound down to this frame, and nothing below uses the event's objects:
  // what is unreachable from the globals now is garbage (the minimal runtime's collector only
  // runs when called, and only at such a point).
  __collect();
  return code;
}
