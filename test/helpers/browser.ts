/** Headless Chromium for browser tests, with the pages' errors collected for failure messages. */
import type { BrowserContext } from "playwright-core";
import { launchChromium } from "../../bench/chromium.js";

/** A browser context on a fresh user-data dir. */
export interface TestBrowser {
  context: BrowserContext;
  /** Page errors and console errors seen so far. */
  errors: string[];
  close(): Promise<void>;
}

/** Launch headless Chromium with a fresh profile. */
export async function launchBrowser(): Promise<TestBrowser> {
  const { context, close } = await launchChromium();
  const errors: string[] = [];
  context.on("page", (page) => {
    page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(`console: ${m.text()}`);
    });
  });
  return { context, errors, close };
}
