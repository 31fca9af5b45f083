/**
 * The simulated clock of a simulation with device speeds: what devices send lands at its
 * simulated time, in that order (ties in the order they were scheduled), whatever order the
 * real training finished in — so runs are deterministic and take no simulated time to wait.
 */
import type { SimulatedTime } from "../coordinator/transport.js";

interface Landing {
  at: number;
  seq: number;
  land: () => void;
}

export class SimClock implements SimulatedTime {
  private time = 0;
  private seq = 0;
  private readonly queue: Landing[] = [];
  private readonly training = new Set<Promise<unknown>>();

  now(): number {
    return this.time;
  }

  /**
   * Schedule `land` at simulated time `at` (never before now). Ties land in `seq` order: by
   * default the order of the calls, or a place taken earlier with {@link reserve}.
   */
  at(at: number, land: () => void, seq: number = this.seq++): void {
    this.queue.push({ at: Math.max(at, this.time), seq, land });
  }

  /**
   * Take `n` places in the tie order now, for landings scheduled later in whatever order their
   * training finishes: the first place's number (the others follow it).
   */
  reserve(n: number): number {
    const first = this.seq;
    this.seq += n;
    return first;
  }

  /** Training in progress: nothing lands until it has finished (it may schedule earlier landings). */
  track(work: Promise<unknown>): void {
    this.training.add(work);
    const done = () => this.training.delete(work);
    work.then(done, done);
  }

  async deliverNext(): Promise<boolean> {
    while (this.training.size > 0) await Promise.allSettled([...this.training]);
    const next = this.pop();
    if (next === undefined) return false;
    this.time = next.at;
    next.land();
    return true;
  }

  /** Land everything scheduled, in simulated order (a synchronous round's arrivals). */
  drain(): void {
    for (let next = this.pop(); next !== undefined; next = this.pop()) {
      this.time = next.at;
      next.land();
    }
  }

  private pop(): Landing | undefined {
    if (this.queue.length === 0) return undefined;
    let best = 0;
    for (let i = 1; i < this.queue.length; i++) {
      const a = this.queue[i]!;
      const b = this.queue[best]!;
      if (a.at < b.at || (a.at === b.at && a.seq < b.seq)) best = i;
    }
    return this.queue.splice(best, 1)[0];
  }
}
