/** Run the built `cohort` CLI as a child process. */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { readFile } from "node:fs/promises";
import { afterEach, expect } from "vitest";

export const CLI = fileURLToPath(new URL("../../dist/bin/cohort.js", import.meta.url));

/** A running CLI process with its output collected line by line. */
export interface CliProcess {
  child: ChildProcess;
  lines: string[];
  /** Resolves with the first stdout line matching `pattern`. */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  exit: Promise<number | null>;
}

/** Start `cohort <args>`. */
export function startCli(args: string[]): CliProcess {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  const watchers: { pattern: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  const onLine = (line: string) => {
    lines.push(line);
    for (const w of [...watchers]) {
      const m = line.match(w.pattern);
      if (m) {
        watchers.splice(watchers.indexOf(w), 1);
        w.resolve(m);
      }
    }
  };
  let buffered = { out: "", err: "" };
  const feed = (key: "out" | "err") => (chunk: Buffer) => {
    const text = buffered[key] + chunk.toString("utf8");
    const parts = text.split("\n");
    buffered = { ...buffered, [key]: parts.pop() ?? "" };
    parts.forEach(onLine);
  };
  child.stdout!.on("data", feed("out"));
  child.stderr!.on("data", feed("err"));
  const exit = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return {
    child,
    lines,
    exit,
    waitForLine: (pattern, timeoutMs = 60_000) => {
      const found = lines.map((l) => l.match(pattern)).find((m) => m !== null);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(
              new Error(`no line matching ${pattern} within ${timeoutMs} ms:\n${lines.join("\n")}`),
            ),
          timeoutMs,
        );
        watchers.push({ pattern, resolve: (m) => (clearTimeout(timer), resolve(m)) });
      });
    },
  };
}

/** Run `cohort <args>` to completion. */
export async function runCli(args: string[]): Promise<{ code: number | null; output: string }> {
  const p = startCli(args);
  const code = await p.exit;
  await new Promise((r) => setTimeout(r, 10));
  return { code, output: p.lines.join("\n") };
}

/** Arguments of `cohort client` holding shard `i` of `n` of the MNIST digits, on wasm. */
export function digitsClientArgs(
  url: string,
  i: number,
  n: number,
  maxExamples: number,
  extra: string[] = [],
): string[] {
  return [
    "client",
    "--url",
    url,
    "--dataset",
    "mnist",
    "--client-index",
    String(i),
    "--num-clients",
    String(n),
    "--max-examples",
    String(maxExamples),
    "--backend",
    "wasm",
    ...extra,
  ];
}

/** `cohort <name> --help` exits 0 and lists every one of `flags` with its default. */
export async function expectHelpListsFlags(
  name: string,
  flags: Readonly<Record<string, unknown>>,
): Promise<void> {
  const { code, output } = await runCli([name, "--help"]);
  expect(code).toBe(0);
  for (const flag of Object.keys(flags)) {
    expect(output).toMatch(new RegExp(`--${flag} .*\\(default: [^)]+\\)`));
  }
}

/**
 * `start(args)` runs `cohort <args>` like {@link startCli}; every process it started is killed
 * (-9) after each test. Call in a test file's `describe`.
 */
export function cliPerTest(): (args: string[]) => CliProcess {
  const procs: CliProcess[] = [];
  afterEach(() => {
    for (const p of procs.splice(0)) p.child.kill("SIGKILL");
  });
  return (args) => {
    const p = startCli(args);
    procs.push(p);
    return p;
  };
}

/** The non-empty lines of a file (metrics.jsonl), none when it does not exist. */
export async function fileLines(path: string): Promise<string[]> {
  try {
    return (await readFile(path, "utf8")).split("\n").filter((l) => l.trim() !== "");
  } catch {
    return [];
  }
}
