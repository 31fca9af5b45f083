/** Progress display: a redrawn bar with round, accuracy and ETA on a terminal; plain lines otherwise. */

/** Renders simulation progress to a stream. */
export class Progress {
  private readonly started = Date.now();
  private readonly tty: boolean;

  constructor(
    private readonly total: number,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = stream.isTTY === true;
  }

  /** Report a completed round. */
  round(done: number, accuracy: number | undefined, extra = ""): void {
    const elapsed = (Date.now() - this.started) / 1000;
    const eta = done > 0 ? (elapsed / done) * (this.total - done) : 0;
    const acc = accuracy === undefined ? "" : `  accuracy ${accuracy.toFixed(4)}`;
    const text = `round ${done}/${this.total}${acc}  ${fmt(elapsed)} elapsed  ETA ${fmt(eta)}${extra ? `  ${extra}` : ""}`;
    if (this.tty) {
      const width = 24;
      const filled = Math.round((width * done) / this.total);
      this.stream.write(`\r[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${text}\x1b[K`);
      if (done === this.total) this.stream.write("\n");
    } else {
      this.stream.write(`${text}\n`);
    }
  }

  /** A message on its own line. */
  line(text: string): void {
    this.stream.write(this.tty ? `\r${text}\x1b[K\n` : `${text}\n`);
  }
}

function fmt(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(0)}s`;
  const m = Math.floor(seconds / 60);
  return m < 60
    ? `${m}m${String(Math.round(seconds % 60)).padStart(2, "0")}s`
    : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}
