/** Strict query parsing for the web routes: unknown or malformed parameters are a 400. */
import { HttpError } from "./respond.js";

/** An integer parameter: its range, and its default when absent (required without one). */
export interface IntParam {
  min: number;
  max: number;
  default?: number;
}

/** Parse `url`'s query as integers per `spec`; throws `HttpError(400)` naming the parameter. */
export function intQuery<K extends string>(url: URL, spec: Record<K, IntParam>): Record<K, number> {
  const known = Object.keys(spec);
  for (const key of url.searchParams.keys()) {
    if (!known.includes(key)) {
      throw new HttpError(
        400,
        `unknown query parameter "${key}"; expected ${known.join(", ") || "none"}`,
      );
    }
  }
  const out = {} as Record<K, number>;
  for (const key of known as K[]) {
    const { min, max, default: fallback } = spec[key];
    const all = url.searchParams.getAll(key);
    if (all.length > 1) throw new HttpError(400, `query parameter "${key}" is given twice`);
    const raw = all[0];
    if (raw === undefined) {
      if (fallback === undefined) throw new HttpError(400, `query parameter "${key}" is required`);
      out[key] = fallback;
      continue;
    }
    const value = /^-?\d+$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(value) || value < min || value > max) {
      throw new HttpError(
        400,
        `query parameter "${key}" must be an integer in [${min}, ${max}], got "${raw.slice(0, 40)}"`,
      );
    }
    out[key] = value;
  }
  return out;
}
