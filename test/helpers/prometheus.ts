/** A strict parser of the Prometheus text exposition format (0.0.4), for asserting `/metrics`. */

/** One sample line. */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** One family: its HELP, TYPE and samples. */
export interface PromFamily {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram" | "summary" | "untyped";
  samples: PromSample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = ["counter", "gauge", "histogram", "summary", "untyped"] as const;
const SUFFIXES: Record<PromFamily["type"], string[]> = {
  counter: [""],
  gauge: [""],
  untyped: [""],
  summary: ["", "_sum", "_count"],
  histogram: ["_bucket", "_sum", "_count"],
};

function parseValue(text: string, line: number): number {
  if (text === "NaN") return NaN;
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) {
    throw new Error(`line ${line}: bad value "${text}"`);
  }
  return Number(text);
}

/** Parse `{a="x",b="y"}` starting at `text[0] === "{"`; returns the labels and the rest. */
function parseLabels(text: string, line: number): { labels: Record<string, string>; rest: string } {
  const labels: Record<string, string> = {};
  let i = 1;
  while (text[i] !== "}") {
    const eq = text.indexOf("=", i);
    if (eq < 0) throw new Error(`line ${line}: unterminated labels`);
    const name = text.slice(i, eq);
    if (!LABEL_NAME.test(name)) throw new Error(`line ${line}: bad label name "${name}"`);
    if (name in labels) throw new Error(`line ${line}: label ${name} repeated`);
    if (text[eq + 1] !== '"') throw new Error(`line ${line}: label ${name} value is not quoted`);
    let value = "";
    let j = eq + 2;
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === "\\") {
        const next = text[++j];
        if (next === "n") value += "\n";
        else if (next === "\\" || next === '"') value += next;
        else throw new Error(`line ${line}: bad escape \\${next ?? ""}`);
      } else value += text[j];
    }
    if (j >= text.length) throw new Error(`line ${line}: unterminated label value`);
    labels[name] = value;
    i = j + 1;
    if (text[i] === ",") i++;
    else if (text[i] !== "}") throw new Error(`line ${line}: expected , or } after label ${name}`);
  }
  return { labels, rest: text.slice(i + 1) };
}

/**
 * Parse exposition text. Throws on anything the format does not allow: a sample before its
 * TYPE, a family split in two, a duplicate series, a sample name that is not its family's,
 * malformed names, labels, escapes or values, a missing final newline.
 */
export function parsePrometheus(text: string): Map<string, PromFamily> {
  if (!text.endsWith("\n")) throw new Error("exposition must end with a newline");
  const families = new Map<string, PromFamily>();
  const series = new Set<string>();
  let current: PromFamily | null = null;
  const lines = text.slice(0, -1).split("\n");
  lines.forEach((raw, index) => {
    const line = index + 1;
    if (raw.trim() === "") return;
    if (raw.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(raw);
      if (m === null) return; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (!NAME.test(name)) throw new Error(`line ${line}: bad metric name "${name}"`);
      let family = families.get(name);
      if (family === undefined) {
        family = { name, help: "", type: "untyped", samples: [] };
        families.set(name, family);
      } else if (family !== current) {
        throw new Error(`line ${line}: family ${name} appears twice`);
      } else if (family.samples.length > 0) {
        throw new Error(`line ${line}: ${kind} for ${name} after its samples`);
      }
      if (kind === "TYPE") {
        if (!(TYPES as readonly string[]).includes(rest)) {
          throw new Error(`line ${line}: bad type "${rest}"`);
        }
        family.type = rest as PromFamily["type"];
      } else family.help = rest.replace(/\\n/g, "\n").replace(/\\\\/g, "\\");
      current = family;
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(.*)$/.exec(raw);
    if (m === null) throw new Error(`line ${line}: bad sample "${raw}"`);
    const name = m[1]!;
    let rest = m[2]!;
    let labels: Record<string, string> = {};
    if (rest.startsWith("{")) ({ labels, rest } = parseLabels(rest, line));
    const parts = rest.trim().split(/ +/);
    if (!rest.startsWith(" ") || parts.length < 1 || parts.length > 2) {
      throw new Error(`line ${line}: expected "name{labels} value [timestamp]"`);
    }
    const value = parseValue(parts[0]!, line);
    if (parts[1] !== undefined && !/^-?\d+$/.test(parts[1])) {
      throw new Error(`line ${line}: bad timestamp`);
    }
    const family: PromFamily | null = current;
    const owner =
      family !== null && SUFFIXES[family.type].some((s) => family.name + s === name)
        ? family
        : null;
    if (owner === null) {
      if (families.has(name)) throw new Error(`line ${line}: family ${name} appears twice`);
      throw new Error(`line ${line}: sample ${name} has no # TYPE line before it`);
    }
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (series.has(key)) throw new Error(`line ${line}: duplicate series ${key}`);
    series.add(key);
    owner.samples.push({ name, labels, value });
  });
  return families;
}

/** The value of the one sample of `name` matching `labels`; throws when there is none. */
export function sampleValue(
  families: Map<string, PromFamily>,
  name: string,
  labels: Record<string, string> = {},
): number {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) {
        return s.value;
      }
    }
  }
  throw new Error(`no sample ${name} ${JSON.stringify(labels)}`);
}
