// The AssemblyScript SDK for Kiri functions (ABI v1, docs/writing-functions.md).
//
//     import { emit, handler, OK, Reading } from "@kiri/sdk/assembly";
//     export * from "@kiri/sdk/assembly/exports";
//
//     function onEvent(topic: string, payload: Uint8Array, receivedAtMs: i64): i32 {
//       return emit("echo", payload) < 0 ? 1 : OK;
//     }
//     handler(onEvent);
//
// Build with the SDK's asconfig (asconfig.kiri.json), which picks the runtime and routes
// AssemblyScript's abort/trace/seed to the "kiri" imports: docs/functions-assemblyscript.md.

import "./env";

export * from "./abi";
export * from "./host";
export { Handler, handler, NO_HANDLER } from "./event";
export * from "./cbor";
export * from "./json";
export * from "./reading";
export { parseNumber } from "./number";
export { isValidUtf8 } from "./utf8";
