/** Cohort as a user's project holds it: the built package in node_modules/cohort, without chosen dependencies. */
import { execFile } from "node:child_process";
import { cp, mkdir, mkdtemp, readdir, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (where package.json and dist/ are). */
export const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/**
 * A fresh project directory whose `node_modules/cohort` is a copy of the built package (dist/ and
 * package.json) and whose other `node_modules` entries link to this checkout's, less `without`.
 * Node resolves from the copy, so a package left out cannot be found however Cohort looks for it.
 */
export async function installedProject(without: readonly string[] = []): Promise<string> {
  const project = await mkdtemp(join(tmpdir(), "cohort-installed-"));
  const modules = join(project, "node_modules");
  await mkdir(join(modules, "cohort"), { recursive: true });
  await cp(join(ROOT, "dist"), join(modules, "cohort", "dist"), {
    recursive: true,
    filter: (source) => !source.endsWith(".map"),
  });
  await cp(join(ROOT, "package.json"), join(modules, "cohort", "package.json"));
  const source = join(ROOT, "node_modules");
  for (const entry of await readdir(source)) {
    if (entry.startsWith(".") || entry === "cohort" || without.includes(entry)) continue;
    await symlink(join(source, entry), join(modules, entry));
  }
  await writeFile(
    join(project, "package.json"),
    JSON.stringify({ name: "user-project", private: true, type: "module" }),
  );
  return project;
}

/** What a finished child process left behind. */
export interface ChildResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run `command args` in `cwd` to completion; never rejects on a non-zero exit. */
export function runChild(
  command: string,
  args: readonly string[],
  cwd: string,
  timeoutMs = 60_000,
): Promise<ChildResult> {
  return new Promise((resolve) => {
    execFile(
      command,
      args,
      { cwd, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code =
          error === null ? 0 : typeof error.code === "number" ? error.code : (error.signal ?? null);
        resolve({ code: typeof code === "number" ? code : null, stdout, stderr });
      },
    );
  });
}
