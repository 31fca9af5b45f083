/** A fresh Node process that uses Cohort as an installed package would: `import … from "cohort/models"`, plain `@tensorflow/tfjs`. */
import { spawn } from "node:child_process";
import { mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { tempRunDir } from "./federation.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/**
 * A temporary project whose `node_modules` holds this package as `cohort` (its built `dist/`,
 * through `package.json` `exports`) and `@tensorflow/*` — and no tfjs-node.
 */
export async function consumerProject(): Promise<string> {
  const dir = await tempRunDir("cohort-consumer-");
  await mkdir(join(dir, "node_modules"));
  await symlink(ROOT, join(dir, "node_modules", "cohort"), "dir");
  await symlink(
    join(ROOT, "node_modules", "@tensorflow"),
    join(dir, "node_modules", "@tensorflow"),
    "dir",
  );
  await writeFile(join(dir, "package.json"), JSON.stringify({ type: "module", private: true }));
  return dir;
}

/** Run `node script.mjs args…` in `dir` with the given ESM source; resolves with its output. */
export async function runScript(
  dir: string,
  source: string,
  args: string[] = [],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const file = join(dir, "script.mjs");
  await writeFile(file, source);
  const child = spawn(process.execPath, [file, ...args], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
    env: { PATH: process.env.PATH ?? "" },
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  return { code, stdout, stderr };
}
