/** Option merging shared by every component: defaults first, then the caller's defined values. */

/**
 * Merge options over defaults. An explicit `undefined` keeps the default, so optional fields
 * passed through from flags or other options never erase a documented default.
 */
export function withDefaults<T extends object>(defaults: T, options: Partial<T>): T {
  const defined = Object.entries(options).filter(([, v]) => v !== undefined);
  return { ...defaults, ...Object.fromEntries(defined) } as T;
}
