/** Secrets stay out of the run directory: keys, tokens and the API token, looked for in every file. */
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { prepareTask } from "../coordinator/coordinator.js";
import { CohortClient } from "../client/index.js";
import { generateIdentity, issueJoinToken, toBase64 } from "../aggregation/secure/index.js";
import { mnistShards, startCoordinator, tempRunDir } from "./helpers/federation.js";
import { runCli } from "./helpers/cli.js";

let clients: CohortClient[] = [];
afterEach(async () => {
  await Promise.all(clients.map((c) => c.close()));
  clients = [];
});

/** Every file under `dir`, recursively. */
async function files(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await files(path)));
    else out.push(path);
  }
  return out;
}

describe("secrets", () => {
  it("a finished authenticated run leaves no key, token or API token in any file of its run directory", async () => {
    const runDir = await tempRunDir("cohort-secrets-");
    const signing = generateIdentity();
    const issuer = generateIdentity();
    const alice = generateIdentity();
    const bob = generateIdentity();
    const bobToken = issueJoinToken(issuer.secretKey, bob.publicKey, Date.now() + 60_000);
    const apiToken = "dashboard-token-for-this-test-0123";
    const coordinator = await startCoordinator({
      rounds: 1,
      minAvailableClients: 2,
      minFitClients: 2,
      runDir,
      signingKey: signing.secretKey,
      auth: {
        allowedKeys: [toBase64(alice.publicKey)],
        tokenIssuerKey: toBase64(issuer.publicKey),
      },
      apiToken,
    });
    const { shards } = await mnistShards(2, 20);
    clients = [alice, bob].map(
      (identity, i) =>
        new CohortClient({
          url: coordinator.url,
          data: shards[i]!,
          backend: "wasm",
          identity,
          ...(identity === bob ? { joinToken: bobToken } : {}),
          log: () => undefined,
        }),
    );
    await Promise.all(clients.map((c) => c.start()));
    await coordinator.run();
    await coordinator.close();
    const secrets = [signing.secretKey, alice.secretKey, bob.secretKey, issuer.secretKey].flatMap(
      (k) => [
        Buffer.from(toBase64(k)),
        Buffer.from(k.subarray(0, 32)), // the raw seed, in binary files
      ],
    );
    secrets.push(Buffer.from(apiToken), Buffer.from(toBase64(bobToken.signature)));
    const written = await files(runDir);
    expect(written.some((f) => f.endsWith("metrics.jsonl"))).toBe(true);
    for (const file of written) {
      const bytes = await readFile(file);
      for (const secret of secrets) expect(bytes.includes(secret), file).toBe(false);
    }
  });

  it("without authentication, the secret of a client's id is nowhere in the run directory", async () => {
    const runDir = await tempRunDir("cohort-secrets-open-");
    const coordinator = await startCoordinator({
      rounds: 1,
      minAvailableClients: 1,
      minFitClients: 1,
      runDir,
    });
    const { shards } = await mnistShards(1, 20);
    clients = [
      new CohortClient({
        url: coordinator.url,
        data: shards[0]!,
        backend: "wasm",
        log: () => undefined,
      }),
    ];
    await clients[0]!.start();
    await coordinator.run();
    await coordinator.close();
    const secret = (clients[0] as unknown as { secret: string | null }).secret;
    expect(secret).toMatch(/^[A-Za-z0-9+/]{43}=$/); // it was issued
    for (const file of await files(runDir)) {
      expect((await readFile(file)).includes(Buffer.from(secret!)), file).toBe(false);
    }
  });

  it("a run directory's run.json holding a signing key is not read for keys on resume", async () => {
    const runDir = await tempRunDir("cohort-leaked-");
    const attacker = generateIdentity();
    await writeFile(
      join(runDir, "run.json"),
      JSON.stringify({
        runId: "old",
        options: { model: "mlp", seed: 0, signingKey: toBase64(attacker.secretKey) },
      }),
    );
    const { task } = await prepareTask({ resume: runDir }, () => undefined);
    expect(task.coordinatorKey).not.toBe(toBase64(attacker.publicKey));
  });

  it("`cohort keygen` and `cohort token` create their files readable by the owner only", async () => {
    const dir = await tempRunDir("cohort-keys-");
    const identity = join(dir, "alice.json");
    const keygen = await runCli(["keygen", "--out", identity]);
    expect(keygen.code).toBe(0);
    expect((await stat(identity)).mode & 0o777).toBe(0o600);
    const token = join(dir, "token.json");
    const issued = await runCli([
      "token",
      "--issuer",
      identity,
      "--key",
      keygen.output.trim().split("\n").at(-1)!,
      "--out",
      token,
    ]);
    expect(issued.code).toBe(0);
    expect((await stat(token)).mode & 0o777).toBe(0o600);
  });
});
