/** TLS and authentication from the command line: https/wss with a private CA, keys from files. */
import { execFileSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { io } from "socket.io-client";
import { afterEach, describe, expect, it } from "vitest";
import { PROTOCOL_VERSION } from "../protocol/version.js";
import { digitsClientArgs, runCli, startCli, type CliProcess } from "./helpers/cli.js";
import { tempRunDir } from "./helpers/federation.js";

describe("TLS and CLI authentication", () => {
  const procs: CliProcess[] = [];
  afterEach(() => procs.splice(0).forEach((p) => p.child.kill("SIGKILL")));

  it("serves wss with a certificate; an authenticated client with the CA completes the run", async () => {
    const dir = await tempRunDir("cohort-tls-");
    const cert = join(dir, "cert.pem");
    const key = join(dir, "key.pem");
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
      ],
      { stdio: "ignore" },
    );
    const keygen = await runCli(["keygen", "--out", join(dir, "alice.json")]);
    expect(keygen.code).toBe(0);
    const alicePublic = keygen.output.trim();
    await writeFile(join(dir, "keys.txt"), `# admitted clients\n${alicePublic}\n`);
    const again = await runCli(["keygen", "--out", join(dir, "alice.json")]);
    expect(again.output).toMatch(/INVALID_OPTION: cannot write/); // never overwrites a key

    const coordinator = startCli([
      "coordinator",
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--rounds",
      "1",
      "--min-clients",
      "1",
      "--tls-cert",
      cert,
      "--tls-key",
      key,
      "--auth-keys",
      join(dir, "keys.txt"),
      "--run-dir",
      join(dir, "run"),
    ]);
    procs.push(coordinator);
    const [, url] = await coordinator.waitForLine(/listening on (https:\/\/\S+)/);

    // Without the CA, the certificate is refused.
    const refused = await new Promise<string>((resolve) => {
      const s = io(url!, {
        transports: ["websocket"],
        reconnection: false,
        auth: { protocolVersion: PROTOCOL_VERSION, clientId: "x", platform: "t", backend: "none" },
      });
      s.once("connect_error", (e) => (s.close(), resolve(e.message)));
      s.once("connect", () => (s.close(), resolve("connected")));
    });
    expect(refused).not.toBe("connected");

    const client = startCli(
      digitsClientArgs(url!, 0, 1, 100, ["--identity", join(dir, "alice.json"), "--ca", cert]),
    );
    procs.push(client);
    expect(await client.exit).toBe(0);
    expect(await coordinator.exit).toBe(0);
    const metrics = (await readFile(join(dir, "run", "metrics.jsonl"), "utf8")).trim().split("\n");
    expect(JSON.parse(metrics[0]!).participants).toBe(1);
  }, 60_000);
});
