/** Update codecs by name: `{ name, params }` or `NAME[:ARG]` → an `UpdateCodec`, parameters checked and defaulted. */
import { CohortError } from "../../protocol/errors.js";
import { NamedRegistry } from "../named-registry.js";
import type { CodecParams, CodecRef, UpdateCodec } from "../codec.js";

/** A registered codec: its parameters with defaults, its `--codec NAME:ARG` form, and a factory. */
export interface CodecDefinition<P extends CodecParams = CodecParams> {
  name: string;
  /** One line for `--help` and the README's table. */
  summary: string;
  /** Whether the codec is linear (it may run under secure aggregation). */
  linear: boolean;
  defaults: P;
  /** The argument after `NAME:` in `--codec`: its help placeholder, parser and printer. */
  argument?: {
    placeholder: string;
    /** Parameters from `ARG`; throws `INVALID_OPTION` on a bad one. */
    parse(arg: string): Partial<P>;
    /** `ARG` for these parameters, or null where they are the defaults' form (`q8`). */
    format(params: P): string | null;
  };
  /** Throws `INVALID_OPTION` on out-of-range parameters. */
  check?(params: P): void;
  create(params: P, label: string): UpdateCodec;
}

const registry = new NamedRegistry<CodecDefinition>("codec");

/** The codec every run uses unless told otherwise: today's wire format. */
export const DEFAULT_CODEC = "float32";

/** Register a codec under its name (a second registration of a name is refused). */
export function registerCodec<P extends CodecParams>(def: CodecDefinition<P>): void {
  registry.register(def as unknown as CodecDefinition);
}

/** Every registered codec, in registration order. */
export function codecDefinitions(): CodecDefinition[] {
  return registry.all();
}

function definition(name: string): CodecDefinition {
  return registry.get(name);
}

/** `NAME[:ARG]` (`q8`, `topk:0.01`, `topk:0.01:f16`) as a reference. */
export function parseCodecSpec(spec: string): CodecRef {
  const at = spec.indexOf(":");
  const name = at < 0 ? spec : spec.slice(0, at);
  const def = definition(name);
  if (at < 0) return { name, params: {} };
  if (def.argument === undefined) {
    throw new CohortError("INVALID_OPTION", `codec ${name} takes no argument, got "${spec}"`);
  }
  return { name, params: def.argument.parse(spec.slice(at + 1)) as CodecParams };
}

function merged(def: CodecDefinition, params: unknown): CodecParams {
  if (params === undefined || params === null) return { ...def.defaults };
  if (typeof params !== "object" || Array.isArray(params)) {
    throw new CohortError("INVALID_OPTION", `codec ${def.name}: params must be an object`);
  }
  const out: CodecParams = { ...def.defaults };
  for (const [key, value] of Object.entries(params as Record<string, unknown>)) {
    if (value === undefined) continue;
    const fallback = def.defaults[key];
    if (fallback === undefined) {
      const has = Object.keys(def.defaults);
      throw new CohortError(
        "INVALID_OPTION",
        `codec ${def.name} has no parameter "${key}"` +
          (has.length > 0 ? `; it has ${has.join(", ")}` : "; it takes none"),
      );
    }
    if (
      typeof value !== typeof fallback ||
      (typeof value === "number" && !Number.isFinite(value))
    ) {
      throw new CohortError(
        "INVALID_OPTION",
        `codec ${def.name}: ${key} must be a ${typeof fallback}, got ${JSON.stringify(value)}`,
      );
    }
    out[key] = value as number | string | boolean;
  }
  def.check?.(out);
  return out;
}

/**
 * Turn `NAME[:ARG]` or `{ name, params }` into a codec.
 *
 * @throws CohortError `INVALID_OPTION` for an unknown codec or a bad parameter.
 */
export function resolveCodec(ref: string | CodecRef): UpdateCodec {
  const given = typeof ref === "string" ? parseCodecSpec(ref) : ref;
  if (typeof given !== "object" || given === null || typeof given.name !== "string") {
    throw new CohortError("INVALID_OPTION", "codec must be NAME[:ARG] or { name, params }");
  }
  const def = definition(given.name);
  const params = merged(def, given.params);
  const arg = def.argument?.format(params) ?? null;
  return def.create(params, arg === null ? def.name : `${def.name}:${arg}`);
}

/** The fully defaulted reference of a codec (what the task and `run.json` carry), keys sorted. */
export function codecRef(codec: UpdateCodec): CodecRef {
  const params: CodecParams = {};
  for (const key of Object.keys(codec.params).sort()) params[key] = codec.params[key]!;
  return { name: codec.name, params };
}

/**
 * Refuse a codec that secure aggregation cannot sum, or a quantizer's secure form in a DP run
 * (distributed noise needs the 32-bit words' room, and coarse rounding would add to the
 * sensitivity the accountant counts), naming why (`INVALID_OPTION`).
 */
export function checkCodec(
  codec: UpdateCodec,
  opts: { secure: boolean; dp?: boolean },
): void {
  if (opts.secure && !codec.linear) {
    throw new CohortError(
      "INVALID_OPTION",
      `codec ${codec.label} is not linear: secure aggregation gives the coordinator only the sum ` +
        `of the encodings, and ${codec.label}'s cannot be summed. Use float32, q8, q4 or q2 with --secure.`,
    );
  }
  if (opts.secure && opts.dp === true && codec.secure !== undefined) {
    throw new CohortError(
      "INVALID_OPTION",
      `codec ${codec.label} rounds secure updates to ${codec.secure.bits} bits, which the ` +
        "privacy accounting does not cover (and distributed noise needs 32-bit words); use " +
        "--codec float32 with --secure and --dp-clip",
    );
  }
}

/** A number argument in `(min, max]`, for definitions' parsers. */
export function numberArg(codec: string, key: string, text: string, min: number, max: number) {
  const v = Number(text);
  if (text.trim() === "" || !Number.isFinite(v) || v <= min || v > max) {
    throw new CohortError(
      "INVALID_OPTION",
      `codec ${codec}: ${key} must be a number in (${min}, ${max}], got "${text}"`,
    );
  }
  return v;
}
