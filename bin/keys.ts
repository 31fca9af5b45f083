/** Key files of the command line: identities (Ed25519 key pairs) and join tokens, as JSON. */
import { readFile, writeFile } from "node:fs/promises";
import {
  fromBase64,
  generateIdentity,
  identityFromSecret,
  issueJoinToken,
  toBase64,
  type JoinToken,
  type KeyPair,
} from "../aggregation/secure/index.js";
import { CohortError } from "../protocol/errors.js";
import { publicKeyOption } from "../client/options.js";
import { helpText, parseFlags, type CommandSpec, type FlagSpec } from "./args.js";

async function readJson(path: string, what: string): Promise<Record<string, unknown>> {
  try {
    return JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
  } catch (cause) {
    throw new CohortError(
      "INVALID_OPTION",
      `cannot read ${what} ${path}: ${(cause as Error).message}`,
      { cause },
    );
  }
}

/** Read an identity file `{ "publicKey": base64, "secretKey": base64 }`. */
export async function readIdentity(path: string): Promise<KeyPair> {
  const o = await readJson(path, "identity");
  try {
    const pair = identityFromSecret(fromBase64(String(o.secretKey), "secretKey"));
    if (o.publicKey !== undefined && o.publicKey !== toBase64(pair.publicKey))
      throw new TypeError("publicKey does not match secretKey");
    return pair;
  } catch (cause) {
    throw new CohortError(
      "INVALID_OPTION",
      `${path} is not an identity file: ${(cause as Error).message}`,
      { cause },
    );
  }
}

/** Read a join-token file `{ "expiresAt": ms, "signature": base64 }`. */
export async function readJoinToken(path: string): Promise<JoinToken> {
  const o = await readJson(path, "join token");
  const signature = typeof o.signature === "string" ? base64OrNull(o.signature) : null;
  if (typeof o.expiresAt !== "number" || signature === null) {
    throw new CohortError(
      "INVALID_OPTION",
      `${path} is not a join token (expiresAt: a number, signature: base64)`,
    );
  }
  return { expiresAt: o.expiresAt, signature };
}

function base64OrNull(text: string): Uint8Array | null {
  try {
    return fromBase64(text);
  } catch {
    return null;
  }
}

/** Read a file of base64 public keys, one per line (# comments allowed). */
export async function readKeyList(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (cause) {
    throw new CohortError("INVALID_OPTION", `cannot read key list ${path}`, { cause });
  }
  return text
    .split("\n")
    .map((l) => l.replace(/#.*/, "").trim())
    .filter((l) => l !== "");
}

export const keygenCommand = {
  name: "keygen",
  summary:
    "Create an Ed25519 identity file for a client (or a token issuer, or a coordinator's signing key); prints its public key.",
  flags: {
    out: {
      type: "string",
      placeholder: "FILE",
      description: "where to write the identity (required; mode 0600)",
    },
  },
} satisfies CommandSpec<Record<string, FlagSpec>>;

/** `cohort keygen --out FILE`. */
export async function runKeygen(argv: string[]): Promise<number> {
  const flags = parseFlags(keygenCommand, argv);
  if (flags === null) {
    console.log(helpText(keygenCommand));
    return 0;
  }
  if (flags.out === undefined) throw new CohortError("INVALID_OPTION", "--out is required");
  const pair = generateIdentity();
  const json = { publicKey: toBase64(pair.publicKey), secretKey: toBase64(pair.secretKey) };
  await writeFile(flags.out, JSON.stringify(json, null, 2) + "\n", {
    mode: 0o600,
    flag: "wx",
  }).catch((cause: Error) => {
    throw new CohortError("INVALID_OPTION", `cannot write ${flags.out}: ${cause.message}`, {
      cause,
    });
  });
  console.log(json.publicKey);
  return 0;
}

export const tokenCommand = {
  name: "token",
  summary:
    "Issue a join token admitting one client key, signed by an issuer identity the coordinator trusts (--token-issuer).",
  flags: {
    issuer: {
      type: "string",
      placeholder: "FILE",
      description: "the issuer's identity file (required)",
    },
    key: {
      type: "string",
      placeholder: "BASE64",
      description: "the client's public key (required)",
    },
    hours: { type: "number", default: 24, description: "validity from now" },
    out: {
      type: "string",
      placeholder: "FILE",
      description: "where to write the token (required)",
    },
  },
} satisfies CommandSpec<Record<string, FlagSpec>>;

/** `cohort token --issuer FILE --key BASE64 --out FILE`. */
export async function runToken(argv: string[]): Promise<number> {
  const flags = parseFlags(tokenCommand, argv);
  if (flags === null) {
    console.log(helpText(tokenCommand));
    return 0;
  }
  if (flags.issuer === undefined || flags.key === undefined || flags.out === undefined) {
    throw new CohortError("INVALID_OPTION", "--issuer, --key and --out are required");
  }
  if (!(flags.hours > 0) || !Number.isFinite(flags.hours)) {
    throw new CohortError(
      "INVALID_OPTION",
      `--hours must be a positive number, got ${flags.hours}`,
    );
  }
  const clientKey = publicKeyOption(flags.key, "--key");
  const issuer = await readIdentity(flags.issuer);
  const token = issueJoinToken(issuer.secretKey, clientKey, Date.now() + flags.hours * 3_600_000);
  await writeFile(
    flags.out,
    JSON.stringify({ expiresAt: token.expiresAt, signature: toBase64(token.signature) }) + "\n",
    { mode: 0o600 },
  );
  console.log(`token for ${flags.key} valid until ${new Date(token.expiresAt).toISOString()}`);
  return 0;
}
