/**
 * The monitor (dmeventd's role for dmsnap): a long-running loop that finds every dmsnap
 * snapshot from the kernel at each pass (so that snapshots taken meanwhile are picked up),
 * reports state changes, applies autoextend and the free-space guard to COW files whose
 * snapshot outlives the command that took it, and writes per-snapshot metrics for
 * node_exporter's textfile collector. It holds no lock while idle: only a growth or a
 * drop takes the origin's lock, for that step.
 */
import { renameSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { check, checkPath } from '../validate';
import type { LifecycleOptions } from './context';
import { cowFileRecord, DEFAULT_AUTOEXTEND_STEP_PERCENT, DEFAULT_MIN_FREE_PERCENT, extendCowFile, hostSpace } from './cow-guard';
import { metricsText, type SnapshotSample } from './metrics';
import { listOrigins } from './open';

/** What the monitor reports. */
export type MonitorEvent =
  | { kind: 'found'; origin: string; snapshot: string; state: string; cowFile: string | null }
  | { kind: 'state'; origin: string; snapshot: string; state: string; previous: string }
  | { kind: 'extended'; origin: string; snapshot: string; path: string; sizeBytes: number }
  | { kind: 'low-space'; origin: string; snapshot: string; path: string; freePercent: number; action: 'dropped' | 'kept' }
  | { kind: 'gone'; origin: string; snapshot: string }
  | { kind: 'error'; message: string };

/** Options of monitor. */
export interface MonitorOptions extends LifecycleOptions {
  /** Time between passes, in ms (default 2000). */
  intervalMs?: number;
  /** The free-space margin of COW files' filesystems, in percent (default 5). */
  minFreePercent?: number;
  /** Below the margin: drop the snapshot (its COW file is deleted) or keep it and report (default 'keep'). */
  onFull?: 'drop' | 'keep';
  /** Autoextend for COW files; off unless given. */
  autoextend?: { thresholdPercent: number; stepPercent?: number };
  /** Where to write metrics after each pass (Prometheus text format, replaced atomically). */
  metricsPath?: string;
  /** Ends the monitor, after the current pass. */
  signal?: AbortSignal;
  /** Called for each event. */
  onEvent?: (event: MonitorEvent) => void;
}

function checkMonitorOptions(options: MonitorOptions): void {
  check(options.intervalMs === undefined || (Number.isFinite(options.intervalMs) && options.intervalMs > 0), 'intervalMs', 'a positive number of milliseconds', options.intervalMs);
  check(options.onFull === undefined || options.onFull === 'drop' || options.onFull === 'keep', 'onFull', '"drop" or "keep"', options.onFull);
  if (options.metricsPath !== undefined) checkPath(options.metricsPath, 'metricsPath');
}

/** One pass over every snapshot; returns the samples for the metrics. */
async function pass(options: MonitorOptions, seen: Map<string, string>, warned: Set<string>): Promise<SnapshotSample[]> {
  const emit = options.onEvent ?? (() => undefined);
  const samples: SnapshotSample[] = [];
  const now = new Set<string>();
  for (const origin of await listOrigins(options)) {
    // A rollback whose merge is done is finished here: its snapshot is then reported gone.
    await origin.finishMerge();
    for (const snap of await origin.snapshots()) {
      const key = `${origin.name}/${snap.name}`;
      now.add(key);
      const status = await snap.status().catch(() => undefined);
      if (!status) continue;
      const previous = seen.get(key);
      if (previous === undefined) emit({ kind: 'found', origin: origin.name, snapshot: snap.name, state: status.state, cowFile: snap.info.cowFile });
      else if (previous !== status.state) emit({ kind: 'state', origin: origin.name, snapshot: snap.name, state: status.state, previous });
      seen.set(key, status.state);
      const record = cowFileRecord(snap, options);
      const sample: SnapshotSample = { origin: origin.name, snapshot: snap.name, status, createdAt: record?.createdAt ?? null };
      samples.push(sample);
      // A COW being merged back only shrinks, and its snapshot cannot be dropped meanwhile.
      if (!record || status.state === 'merging') continue;
      const space = hostSpace(record.path);
      sample.hostFreeRatio = space.freePercent / 100;
      if (space.freePercent < (options.minFreePercent ?? DEFAULT_MIN_FREE_PERCENT)) {
        const action = options.onFull === 'drop' ? 'dropped' : 'kept';
        if (action === 'dropped') await snap.drop();
        if (action === 'dropped' || !warned.has(key)) emit({ kind: 'low-space', origin: origin.name, snapshot: snap.name, path: record.path, freePercent: space.freePercent, action });
        warned.add(key);
        continue;
      }
      warned.delete(key);
      const auto = options.autoextend;
      if (auto && status.state === 'active' && status.usedPercent >= auto.thresholdPercent) {
        const grown = await extendCowFile(snap, record, auto.stepPercent ?? DEFAULT_AUTOEXTEND_STEP_PERCENT, options);
        if (grown !== undefined) emit({ kind: 'extended', origin: origin.name, snapshot: snap.name, path: record.path, sizeBytes: grown });
      }
    }
  }
  for (const key of [...seen.keys()].filter((k) => !now.has(k))) {
    seen.delete(key);
    warned.delete(key);
    const [origin, snapshot] = key.split('/');
    emit({ kind: 'gone', origin, snapshot });
  }
  return samples;
}

/** Writes `text` to `path` atomically (a temporary file beside it, then rename). */
function replaceFile(path: string, text: string): void {
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, text, { mode: 0o644 });
  renameSync(temporary, path);
}

/**
 * Runs until `options.signal` aborts. A pass that fails (the kernel or a snapshot in an
 * unexpected state) is reported as an 'error' event and the next pass runs as usual.
 */
export async function monitor(options: MonitorOptions = {}): Promise<void> {
  checkMonitorOptions(options);
  const seen = new Map<string, string>();
  const warned = new Set<string>();
  while (!options.signal?.aborted) {
    try {
      const samples = await pass(options, seen, warned);
      if (options.metricsPath) replaceFile(options.metricsPath, metricsText(samples, Date.now()));
    } catch (error) {
      options.onEvent?.({ kind: 'error', message: error instanceof Error ? error.message : String(error) });
    }
    await sleep(options.intervalMs ?? 2000, undefined, { signal: options.signal }).catch(() => undefined);
  }
}
