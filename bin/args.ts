/** A small typed flag parser over `node:util` parseArgs, with `--help` listing every flag and its default. */
import { parseArgs } from "node:util";
import { CohortError } from "../protocol/errors.js";

/** One flag of a command. */
export interface FlagSpec {
  type: "string" | "number" | "boolean";
  description: string;
  /** Shown in `--help`; `undefined` means "unset". */
  default?: string | number | boolean;
  /** Shown in `--help` instead of the default, for computed defaults. */
  defaultText?: string;
  placeholder?: string;
  /** A string flag given any number of times, each value also split on commas: a `string[]`. */
  multiple?: true;
}

/** A sub-command's flags. */
export interface CommandSpec<F extends Record<string, FlagSpec>> {
  name: string;
  summary: string;
  flags: F;
}

type Value<S extends FlagSpec> = S["multiple"] extends true
  ? string[]
  : S["type"] extends "number"
    ? number
    : S["type"] extends "boolean"
      ? boolean
      : string;

/** Parsed flags: a value where a default or the user gave one. */
export type Parsed<F extends Record<string, FlagSpec>> = {
  [K in keyof F]: F[K]["default"] extends undefined ? Value<F[K]> | undefined : Value<F[K]>;
};

/** The `--help` text of a command. */
export function helpText<F extends Record<string, FlagSpec>>(spec: CommandSpec<F>): string {
  const rows = Object.entries(spec.flags).map(([name, f]) => {
    const flag = `--${name}${f.type === "boolean" ? "" : ` ${f.placeholder ?? f.type.toUpperCase()}`}`;
    const def = f.defaultText ?? (f.default === undefined ? "unset" : String(f.default));
    return `  ${flag.padEnd(32)}  ${f.description} (default: ${def})`;
  });
  return [
    `Usage: cohort ${spec.name} [flags]`,
    "",
    spec.summary,
    "",
    "Flags:",
    ...rows,
    `  ${"--help".padEnd(32)}  show this help`,
  ].join("\n");
}

/** Parse argv; returns `null` when `--help` was asked for. Unknown flags and bad numbers throw. */
export function parseFlags<F extends Record<string, FlagSpec>>(
  spec: CommandSpec<F>,
  argv: string[],
): Parsed<F> | null {
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean }> = {
    help: { type: "boolean" },
  };
  for (const [name, f] of Object.entries(spec.flags)) {
    options[name] = {
      type: f.type === "boolean" ? "boolean" : "string",
      ...(f.multiple ? { multiple: true } : {}),
    };
  }
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }) as {
      values: Record<string, string | boolean | string[] | undefined>;
    });
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new CohortError(
      "INVALID_OPTION",
      `${reason}\nRun "cohort ${spec.name} --help" for the flags.`,
      { cause },
    );
  }
  if (values.help === true) return null;
  const out: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(spec.flags)) {
    const raw = values[name];
    if (raw === undefined) {
      out[name] = f.default;
    } else if (Array.isArray(raw)) {
      out[name] = raw.flatMap((v) => v.split(",").map((part) => part.trim())).filter(Boolean);
    } else if (f.type === "number") {
      const n = Number(raw);
      if (typeof raw !== "string" || raw.trim() === "" || !Number.isFinite(n)) {
        throw new CohortError("INVALID_OPTION", `--${name} must be a number, got "${String(raw)}"`);
      }
      out[name] = n;
    } else {
      out[name] = raw;
    }
  }
  return out as Parsed<F>;
}
