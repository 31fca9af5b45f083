/** The browser bundle, the pages and the tfjs wasm binaries, found on disk and served read-only. */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { HttpError, type HttpResponse } from "./respond.js";

/** Where the web files are. */
export interface Assets {
  /** `dist/browser` (esbuild's output, pages included), or null when it was not built. */
  dir: string | null;
  /** The `dist` folder of `@tensorflow/tfjs-backend-wasm`, holding its `.wasm` files. */
  wasmDir: string;
}

/** The wasm binaries a page may ask for (plain, SIMD, SIMD + threads). */
export const WASM_FILES = [
  "tfjs-backend-wasm.wasm",
  "tfjs-backend-wasm-simd.wasm",
  "tfjs-backend-wasm-threaded-simd.wasm",
] as const;

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".wasm": "application/wasm",
  ".png": "image/png",
  ".svg": "image/svg+xml",
};

/**
 * Find the built web files: `dist/browser` next to the compiled coordinator
 * (`dist/coordinator/http` → `dist/browser`), or under `dist/` when running from source.
 */
export function locateAssets(dir?: string): Assets {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates =
    dir !== undefined ? [dir] : [join(here, "../../browser"), join(here, "../../dist/browser")];
  const found = candidates.find((d) => existsSync(join(d, "cohort.js"))) ?? null;
  const pkg = createRequire(import.meta.url).resolve("@tensorflow/tfjs-backend-wasm/package.json");
  return { dir: found, wasmDir: join(dirname(pkg), "dist") };
}

/** A safe relative path: segments of word characters, dots and dashes, none starting with a dot. */
const SAFE_PATH = /^(?:[\w-][\w.-]*\/)*[\w-][\w.-]*$/;

/** Serve `relPath` from the built web files (404 when absent, 503 when nothing was built). */
export async function assetFile(assets: Assets, relPath: string): Promise<HttpResponse> {
  if (assets.dir === null) {
    throw new HttpError(503, "the browser bundle is not built: run `npm run build:browser`");
  }
  if (!SAFE_PATH.test(relPath)) throw new HttpError(404, `no file ${relPath}`);
  return fileResponse(join(assets.dir, relPath), relPath);
}

/** Serve one of the tfjs wasm binaries. */
export async function wasmFile(assets: Assets, name: string): Promise<HttpResponse> {
  if (!(WASM_FILES as readonly string[]).includes(name)) {
    throw new HttpError(404, `no wasm file ${name}; expected one of ${WASM_FILES.join(", ")}`);
  }
  return fileResponse(join(assets.wasmDir, name), name);
}

async function fileResponse(path: string, shown: string): Promise<HttpResponse> {
  const contentType = TYPES[extname(path)];
  if (contentType === undefined) throw new HttpError(404, `no file ${shown}`);
  try {
    return { status: 200, contentType, body: await readFile(path) };
  } catch {
    throw new HttpError(404, `no file ${shown}`);
  }
}
