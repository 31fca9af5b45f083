/** The AES-CTR mask PRG: deterministic, seed-sensitive, the standard keystream, masks cancel. */
import { createCipheriv } from "node:crypto";
import { describe, expect, it } from "vitest";
import { randomBytes } from "../../aggregation/crypto.js";
import { addMask, applyMasks, expandSeed } from "../../aggregation/secure/prg.js";

describe("expandSeed", () => {
  it("is deterministic and different seeds give different streams", async () => {
    const seed = randomBytes(32);
    const a = await expandSeed(seed, 1000);
    expect(await expandSeed(seed, 1000)).toEqual(a);
    const other = seed.slice();
    other[31]! ^= 1;
    const b = await expandSeed(other, 1000);
    const same = a.filter((v, i) => v === b[i]).length;
    expect(same).toBeLessThan(3);
    // a prefix of a longer stream is the shorter stream
    expect((await expandSeed(seed, 4000)).subarray(0, 1000)).toEqual(a);
  });

  it("is exactly AES-256-CTR with a zero counter block, as little-endian words", async () => {
    const seed = randomBytes(32);
    const cipher = createCipheriv("aes-256-ctr", seed, Buffer.alloc(16));
    const stream = Buffer.concat([cipher.update(Buffer.alloc(4 * 777)), cipher.final()]);
    const words = await expandSeed(seed, 777);
    for (const i of [0, 1, 100, 776]) expect(words[i]).toBe(stream.readUInt32LE(4 * i));
  });

  it("looks uniform: mean of the words near 2^31", async () => {
    const words = await expandSeed(randomBytes(32), 100_000);
    const mean = words.reduce((s, v) => s + v, 0) / words.length;
    expect(Math.abs(mean / 2 ** 31 - 1)).toBeLessThan(0.01);
  });

  it("rejects a wrong seed or length with a TypeError naming it", async () => {
    await expect(expandSeed(new Uint8Array(16), 4)).rejects.toThrow(/seed must be/);
    await expect(expandSeed(randomBytes(32), -1)).rejects.toThrow(/length must be/);
    expect(await expandSeed(randomBytes(32), 0)).toHaveLength(0);
  });
});

describe("masks modulo 2^32", () => {
  it("cancel: +PRG(s) then −PRG(s) restores the vector, with wrap-around", async () => {
    const x = Uint32Array.from({ length: 500 }, (_, i) => (i * 2654435761) >>> 0);
    const y = x.slice();
    const seed = randomBytes(32);
    await addMask(y, { seed, sign: 1 });
    expect(y).not.toEqual(x);
    await addMask(y, { seed, sign: -1 });
    expect(y).toEqual(x);
  });

  it("applyMasks equals adding them one by one, at any concurrency", async () => {
    const masks = Array.from({ length: 9 }, (_, i) => ({
      seed: randomBytes(32),
      sign: (i % 2 === 0 ? 1 : -1) as 1 | -1,
    }));
    const a = new Uint32Array(300);
    for (const m of masks) await addMask(a, m);
    for (const concurrency of [1, 3, 16]) {
      const b = new Uint32Array(300);
      await applyMasks(b, masks, concurrency);
      expect(b).toEqual(a);
    }
  });
});
