/** Definitions registered by name (strategies, codecs): each name once, unknown names refused listing the known. */
import { CohortError } from "../protocol/errors.js";

/** A registry of definitions of one kind, keyed by their `name`, in registration order. */
export class NamedRegistry<D extends { name: string }> {
  private readonly byName = new Map<string, D>();

  /** @param kind what the definitions are, for errors (`strategy`, `codec`) */
  constructor(private readonly kind: string) {}

  /** Register a definition (a second registration of a name is refused with `INVALID_OPTION`). */
  register(def: D): void {
    if (this.byName.has(def.name)) {
      throw new CohortError("INVALID_OPTION", `${this.kind} ${def.name} is already registered`);
    }
    this.byName.set(def.name, def);
  }

  /** Every definition, in registration order. */
  all(): D[] {
    return [...this.byName.values()];
  }

  /** The definition of `name`; `INVALID_OPTION` naming the known ones when there is none. */
  get(name: string): D {
    const def = this.byName.get(name);
    if (def === undefined) {
      throw new CohortError(
        "INVALID_OPTION",
        `unknown ${this.kind} "${name}"; known: ${[...this.byName.keys()].join(", ")}`,
      );
    }
    return def;
  }
}
