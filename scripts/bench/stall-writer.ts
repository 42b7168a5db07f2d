/**
 * The independent writer of the benchmark: a separate process that overwrites 4 KiB
 * blocks of a file on the filesystem under test and syncs each (write + fdatasync), as a
 * database would, recording when each completes. Asked over IPC, it reports the longest
 * gap between completions around a time window: what a freeze costs a writer.
 *
 * usage (forked with IPC): stall-writer FILE
 * The writing runs on a worker thread so that queries are answered while a write blocks.
 */
import { fdatasyncSync, openSync, writeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { isMainThread, Worker, workerData } from 'node:worker_threads';

const SLOTS = 1 << 20;

/** Wall-clock milliseconds, comparable between processes on one machine. */
export const now = () => performance.timeOrigin + performance.now();

if (isMainThread && require.main === module) {
  const shared = new SharedArrayBuffer(8 * SLOTS + 8);
  const times = new Float64Array(shared, 8);
  const count = new Int32Array(shared, 0, 2);
  const worker = new Worker(__filename, { workerData: { file: process.argv[2], shared } });
  worker.on('error', (error) => {
    process.stderr.write(`stall-writer: ${error.message}\n`);
    process.exit(1);
  });

  /** The longest wait for a completion that overlaps [from, to]. */
  const stall = (from: number, to: number): number => {
    const n = Atomics.load(count, 0);
    const first = Math.max(0, n - SLOTS);
    let worst = 0;
    let previous: number | undefined;
    for (let i = first; i < n; i++) {
      const t = times[i % SLOTS];
      if (previous !== undefined && t >= from && previous <= to) worst = Math.max(worst, t - previous);
      previous = t;
      if (t > to) break;
    }
    // A write still blocked now counts up to now.
    if (previous !== undefined && previous <= to && now() > to) worst = Math.max(worst, Math.min(now(), to) - previous);
    return worst;
  };

  process.on('message', (message: { id: number; from: number; to: number; settleMs?: number }) => {
    // Wait a little past the window, so the write that was blocked in it has completed.
    setTimeout(() => process.send!({ id: message.id, stallMs: stall(message.from, message.to), writes: Atomics.load(count, 0) }), message.settleMs ?? 50);
  });
  process.on('disconnect', () => process.exit(0));
  process.send!({ ready: true });
} else if (!isMainThread) {
  const { file, shared } = workerData as { file: string; shared: SharedArrayBuffer };
  const times = new Float64Array(shared, 8);
  const count = new Int32Array(shared, 0, 2);
  const fd = openSync(file, 'w');
  const block = Buffer.alloc(4096, 0x5a);
  for (let i = 0; ; i++) {
    writeSync(fd, block, 0, block.length, (i % 256) * 4096);
    fdatasyncSync(fd);
    times[i % SLOTS] = now();
    Atomics.store(count, 0, i + 1);
  }
}
