/**
 * Mask PRG benchmark: expanding one seed into a CNN-sized mask (1,663,370 words, 6.65 MB) with
 * AES-256-CTR through WebCrypto (the protocol's PRG) vs tweetnacl's XSalsa20 `crypto_stream`.
 * Prints the median of several runs of each and their ratio.
 *
 * Run with `node dist/bench/secure-prg.js` (after `npm run build`).
 */
import { randomBytes, xsalsa20Stream } from "../aggregation/crypto.js";
import { expandSeed } from "../aggregation/secure/prg.js";

const WORDS = 1_663_370;
const RUNS = 15;

async function median(run: () => unknown): Promise<number> {
  await run(); // warm up
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    await run();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(RUNS / 2)]!;
}

async function main(): Promise<void> {
  const seed = randomBytes(32);
  const mb = (4 * WORDS) / 1e6;
  const aes = await median(() => expandSeed(seed, WORDS));
  const salsa = await median(() => xsalsa20Stream(seed, 4 * WORDS));
  const rows = [
    ["AES-256-CTR (WebCrypto)", aes],
    ["XSalsa20 (tweetnacl)", salsa],
  ] as const;
  process.stdout.write(
    `mask PRG, ${WORDS.toLocaleString("en")} words (${mb.toFixed(2)} MB), median of ${RUNS}\n`,
  );
  for (const [name, ms] of rows) {
    const rate = mb / (ms / 1000);
    process.stdout.write(
      `  ${name.padEnd(26)} ${ms.toFixed(1).padStart(7)} ms  ${rate.toFixed(0).padStart(5)} MB/s\n`,
    );
  }
  process.stdout.write(`  ratio tweetnacl / WebCrypto: ${(salsa / aes).toFixed(2)}×\n`);
}

await main();
