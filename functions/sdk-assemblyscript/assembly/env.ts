// Replacements for the three functions AssemblyScript's standard library imports from "env",
// which Kiri does not offer (a module importing anything but the "kiri" calls is refused when
// it loads). The SDK's asconfig (asconfig.kiri.json) points the compiler at them:
//
//   "use": ["abort=~lib/@kiri/sdk/assembly/env/kiriAbort",
//           "trace=~lib/@kiri/sdk/assembly/env/kiriTrace",
//           "seed=~lib/@kiri/sdk/assembly/env/kiriSeed"]

import { kiri_log, kiri_now_ms, LEVEL_DEBUG, LEVEL_ERROR } from "./abi";

// The abort line is written into a static buffer: abort may be called because memory ran out,
// so it must not allocate. Lines are cut at 1024 bytes (the gateway keeps 4096).
const LINE_CAP: i32 = 1024;
const line: usize = memory.data(LINE_CAP);
let lineLen: i32 = 0;
let aborting = false;

function putByte(b: i32): void {
  if (lineLen < LINE_CAP) {
    store<u8>(line + <usize>lineLen, <u8>b);
    lineLen++;
  }
}

// UTF-16 to UTF-8 (an unpaired surrogate becomes U+FFFD), cut only between characters.
function putString(s: string): void {
  const n = s.length;
  for (let i = 0; i < n; i++) {
    let c = <i32>s.charCodeAt(i);
    if (c >= 0xd800 && c < 0xdc00 && i + 1 < n) {
      const d = <i32>s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c >= 0xd800 && c < 0xe000) c = 0xfffd;
    const need = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    if (lineLen + need > LINE_CAP) return;
    if (need == 1) {
      putByte(c);
    } else if (need == 2) {
      putByte(0xc0 | (c >> 6));
      putByte(0x80 | (c & 0x3f));
    } else if (need == 3) {
      putByte(0xe0 | (c >> 12));
      putByte(0x80 | ((c >> 6) & 0x3f));
      putByte(0x80 | (c & 0x3f));
    } else {
      putByte(0xf0 | (c >> 18));
      putByte(0x80 | ((c >> 12) & 0x3f));
      putByte(0x80 | ((c >> 6) & 0x3f));
      putByte(0x80 | (c & 0x3f));
    }
  }
}

function putDecimal(v: u32): void {
  if (v >= 10) putDecimal(v / 10);
  putByte(0x30 + <i32>(v % 10));
}

/**
 * AssemblyScript's `abort` (a failed `assert`, a `throw`, an index out of range, ...): logs
 * `abort: <message> at <file>:<line>:<column>` at error level through the host's `log`, then
 * traps. The gateway records the invocation as failed with reason `trap`, discards the
 * instance, and keeps the event as a dead letter (retried on a fresh instance).
 */
export function kiriAbort(
  message: string | null = null,
  fileName: string | null = null,
  lineNumber: u32 = 0,
  columnNumber: u32 = 0,
): void {
  // An abort while logging an abort: trap at once.
  if (aborting) unreachable();
  aborting = true;
  lineLen = 0;
  putString("abort: ");
  putString(message !== null ? message : "(no message)");
  if (fileName !== null) {
    putString(" at ");
    putString(fileName);
    putByte(0x3a);
    putDecimal(lineNumber);
    putByte(0x3a);
    putDecimal(columnNumber);
  }
  kiri_log(LEVEL_ERROR, line, lineLen);
  unreachable();
}

/** AssemblyScript's `trace(message, n, a0, ..., a4)`: a debug log line with the n numbers. */
export function kiriTrace(
  message: string,
  n: i32 = 0,
  a0: f64 = 0,
  a1: f64 = 0,
  a2: f64 = 0,
  a3: f64 = 0,
  a4: f64 = 0,
): void {
  let text = "trace: " + message;
  if (n > 0) text += " " + a0.toString();
  if (n > 1) text += ", " + a1.toString();
  if (n > 2) text += ", " + a2.toString();
  if (n > 3) text += ", " + a3.toString();
  if (n > 4) text += ", " + a4.toString();
  const bytes = String.UTF8.encode(text);
  kiri_log(LEVEL_DEBUG, changetype<usize>(bytes), bytes.byteLength);
}

/**
 * AssemblyScript's `seed()`, which seeds `Math.random` on first use: the gateway's clock in
 * milliseconds. Not a source of secrets (and constant on a board whose clock is unset).
 */
export function kiriSeed(): f64 {
  return <f64>kiri_now_ms();
}
