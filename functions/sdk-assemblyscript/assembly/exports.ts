// The functions ABI v1 requires a module to export. Re-export them from the entry file:
//
//     export * from "@kiri/sdk/assembly/exports";

// The handlers asconfig.kiri.json routes abort, trace and seed to must be part of the program.
import "./env";

export { kiri_abi_version, kiri_alloc, kiri_on_event } from "./event";
