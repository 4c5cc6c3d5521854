// Compiles AssemblyScript for the tests with the compiler pinned in package-lock.json.

import asc from "assemblyscript/asc";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The SDK's folder (the tests compile from there, so its files are `assembly/...`). */
export const SDK_DIR = join(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * The options of asconfig.kiri.json, for a module compiled inside the SDK's own folder (where
 * the SDK's files are `assembly/...`, not `~lib/@kiri/sdk/assembly/...`).
 */
export const SDK_OPTIONS = [
  "--runtime", "minimal",
  "--use", "abort=assembly/env/kiriAbort",
  "--use", "trace=assembly/env/kiriTrace",
  "--use", "seed=assembly/env/kiriSeed",
  "-O3",
];

/** Compiles `entry` (relative to `baseDir`) and returns the module's bytes; throws with the compiler's output. */
export async function compile(entry, args = SDK_OPTIONS, baseDir = SDK_DIR) {
  const stdout = asc.createMemoryStream();
  const stderr = asc.createMemoryStream();
  let wasm = null;
  const previous = process.cwd();
  process.chdir(baseDir);
  try {
    const { error } = await asc.main([entry, "--outFile", "out.wasm", ...args], {
      stdout,
      stderr,
      writeFile: (name, contents) => {
        if (name.endsWith(".wasm")) wasm = contents;
      },
    });
    if (error) throw new Error(`asc ${entry}: ${error.message}\n${stderr.toString()}`);
  } finally {
    process.chdir(previous);
  }
  if (!wasm) throw new Error(`asc ${entry}: no module written`);
  return wasm;
}
