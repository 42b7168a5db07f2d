/**
 * A progress bar on stderr (only when stderr is a terminal): bytes, rate and ETA.
 */
import { formatBytes } from './sizes';

/**
 * A one-line progress bar, redrawn in place: label, bar, percentage, bytes done and total,
 * rate and ETA. Does nothing unless the stream is a terminal.
 */
export class ProgressBar {
  private readonly started = Date.now();
  private lastDraw = 0;

  constructor(
    private readonly stream: NodeJS.WritableStream & { isTTY?: boolean; columns?: number },
    private readonly label: string,
  ) {}

  /** Whether the stream is a terminal; if not, update() and finish() do nothing. */
  get enabled(): boolean {
    return this.stream.isTTY === true;
  }

  /** Redraws with `done` of `total` bytes; at most every 200 ms unless `force`. */
  update(done: number, total: number, force = false): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!force && now - this.lastDraw < 200) return;
    this.lastDraw = now;
    const seconds = Math.max((now - this.started) / 1000, 0.001);
    const rate = done / seconds;
    const eta = rate > 0 ? Math.ceil((total - done) / rate) : 0;
    const fraction = total > 0 ? done / total : 1;
    const width = 24;
    const filled = Math.round(fraction * width);
    const bar = `${'#'.repeat(filled)}${' '.repeat(width - filled)}`;
    const text = `${this.label} [${bar}] ${(fraction * 100).toFixed(1).padStart(5)}%  ${formatBytes(done)} / ${formatBytes(total)}  ${formatBytes(rate)}/s  ETA ${eta}s`;
    this.stream.write(`\r${text.slice(0, (this.stream.columns ?? 120) - 1)}\x1b[K`);
  }

  /** Draws the final state and ends the line. */
  finish(done: number, total: number): void {
    if (!this.enabled) return;
    this.update(done, total, true);
    this.stream.write('\n');
  }
}
