/** Headless Chromium for the browser benchmark and tests: Debian's chromium driven by playwright-core. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext } from "playwright-core";

/** The Chromium binary (`COHORT_CHROMIUM` overrides). */
export const CHROMIUM_PATH = process.env.COHORT_CHROMIUM ?? "/usr/bin/chromium";

/** Flags that keep a headless Chromium sandbox-free, quiet and offline (DESIGN.md, "Browser tests"). */
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Launch headless Chromium on a fresh user-data dir; `close()` also removes the dir. */
export async function launchChromium(): Promise<{
  context: BrowserContext;
  close: () => Promise<void>;
}> {
  const dir = await mkdtemp(join(tmpdir(), "cohort-chromium-"));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
  });
  return {
    context,
    close: async () => {
      await context.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
