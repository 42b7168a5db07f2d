/**
 * Watching a snapshot's COW file while it lives: the free-space guard (the filesystem
 * that holds the file must never fill because of a snapshot: below a margin the guard
 * reports it, and the caller stops) and autoextend (LVM's snapshot_autoextend_threshold
 * and _percent: at THRESHOLD % usage the file grows by STEP % and the loop device takes
 * the new size with LOOP_SET_CAPACITY; the persistent exception store reads the COW's
 * size on every allocation, so the snapshot's table is not reloaded).
 */
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DmsnapError } from '../errors';
import { entryAt, fileIdentity, hostFilesystem, resizeOwnFile } from '../system/cow-file';
import { CowRecords, type CowFileRecord } from '../system/cow-records';
import type { LockOptions } from '../system/lock';
import { System } from '../system/system';
import { growCowMapping, labelledCowSectors } from './cow-mapping';
import { currentGroup } from './invariants';
import type { Sectors } from '../units';
import { check } from '../validate';
import { cowLoopTag } from './cow-file';
import type { Snapshot } from './snapshot';

/** Free space of the filesystem that holds a COW file. */
export interface HostSpace {
  path: string;
  availableBytes: number;
  totalBytes: number;
  freePercent: number;
}

/** Options of guardCowFile. */
export interface CowFileGuardOptions extends LockOptions {
  /** The smallest share of its filesystem, in percent, that must stay free (default 5). */
  minFreePercent?: number;
  /** Grow the file at `thresholdPercent` usage by `stepPercent` (default 20) of its size; off unless given. */
  autoextend?: { thresholdPercent: number; stepPercent?: number };
  /** How often to look, in ms (default 500). */
  intervalMs?: number;
  /** Ends the guard. */
  signal?: AbortSignal;
  /** Called once, when free space falls below minFreePercent; the guard then stops. */
  onLowSpace?: (space: HostSpace) => void;
  /** Called after each growth of the file. */
  onExtend?: (grown: { path: string; sizeBytes: number }) => void;
}

/** The default free-space margin, in percent of the COW file's filesystem. */
export const DEFAULT_MIN_FREE_PERCENT = 5;
/** The default autoextend step, in percent of the file's size (LVM's snapshot_autoextend_percent). */
export const DEFAULT_AUTOEXTEND_STEP_PERCENT = 20;

/** Free space of the filesystem that holds `path`. */
export function hostSpace(path: string): HostSpace {
  const fs = hostFilesystem(dirname(path));
  return { path, availableBytes: fs.availableBytes, totalBytes: fs.totalBytes, freePercent: fs.totalBytes > 0 ? (fs.availableBytes / fs.totalBytes) * 100 : 0 };
}

function checkGuardOptions(options: CowFileGuardOptions): void {
  const { minFreePercent, autoextend, intervalMs } = options;
  if (minFreePercent !== undefined) check(Number.isFinite(minFreePercent) && minFreePercent >= 0 && minFreePercent < 100, 'minFreePercent', 'a percentage from 0 to below 100', minFreePercent);
  if (intervalMs !== undefined) check(Number.isFinite(intervalMs) && intervalMs > 0, 'intervalMs', 'a positive number of milliseconds', intervalMs);
  if (autoextend !== undefined) {
    const { thresholdPercent, stepPercent } = autoextend;
    check(Number.isFinite(thresholdPercent) && thresholdPercent >= 50 && thresholdPercent < 100, 'autoextend.thresholdPercent', 'a percentage from 50 to below 100 (as LVM)', thresholdPercent);
    if (stepPercent !== undefined) check(Number.isFinite(stepPercent) && stepPercent > 0 && stepPercent <= 100, 'autoextend.stepPercent', 'a percentage above 0 and at most 100', stepPercent);
  }
}

/** The record of `snap`'s COW file, if dmsnap created one and it is attached. */
export function cowFileRecord(snap: Snapshot, options: LockOptions): CowFileRecord | undefined {
  const record = snap.info.cowFile ? CowRecords.of(options).list().find((r) => r.snapId === snap.info.snapId && r.path === snap.info.cowFile) : undefined;
  return record?.state === 'attached' ? record : undefined;
}

/** The record of `snap`'s COW file, or a refusal: only a COW file dmsnap created can be guarded. */
function recordOf(snap: Snapshot, options: LockOptions): CowFileRecord {
  const record = cowFileRecord(snap, options);
  if (!record) {
    throw new DmsnapError(`snapshot ${snap.name} has no COW file of dmsnap's to watch (it was taken with a COW device)`, 'ERR_INVALID_ARG_VALUE');
  }
  return record;
}

/**
 * Grows the COW file of `record` by `stepPercent`, never beyond what the whole origin
 * needs, under the origin's lock (skipped while another process holds it); the new size,
 * or undefined when nothing grew.
 */
export async function extendCowFile(snap: Snapshot, record: CowFileRecord, stepPercent: number, options: LockOptions): Promise<number | undefined> {
  const system = System.of(snap.dmClient);
  const lock = await system.lock(snap.info.originName, { ...options, lockTimeoutMs: 1000 }).catch(() => undefined);
  if (!lock) return undefined;
  try {
    const device = `/dev/loop${record.loop}`;
    const loop = await system.loop.status(device).catch(() => undefined);
    // Only the loop device that still serves this very file.
    if (!loop || loop.tag !== cowLoopTag(record.originId, record.snapId) || fileIdentity(loop.backing) !== record.identity) return undefined;
    const [line] = await snap.dmClient.table(snap.name);
    const chunkBytes = snap.info.chunkSectors * 512;
    const full = labelledCowSectors((line?.length ?? 0) as Sectors, snap.info.chunkSectors) * 512;
    const current = entryAt(record.path)?.sizeBytes ?? 0;
    const wanted = Math.min(full, Math.ceil((current * (1 + stepPercent / 100)) / chunkBytes) * chunkBytes);
    if (wanted <= current || !resizeOwnFile(record.path, record.identity!, wanted)) return undefined;
    await system.loop.grow(device);
    // A persistent snapshot sees the loop device through its COW mapping: that grows too.
    const mapping = (await currentGroup(snap.dmClient, record.originId)).cows.find((c) => c.tag.snapId === record.snapId);
    if (mapping) await growCowMapping(snap.dmClient, mapping, await system.blockDevice(device));
    const records = CowRecords.of(options);
    records.put({ ...record, sizeBytes: wanted });
    return wanted;
  } finally {
    lock();
  }
}

/**
 * Watches `snap`'s COW file until `options.signal` aborts, the snapshot goes or free
 * space runs low: applies autoextend, and calls onLowSpace once free space is below the
 * margin. Resolves when it stops.
 */
export async function guardCowFile(snap: Snapshot, options: CowFileGuardOptions = {}): Promise<void> {
  checkGuardOptions(options);
  const record = recordOf(snap, options);
  const minFree = options.minFreePercent ?? DEFAULT_MIN_FREE_PERCENT;
  const intervalMs = options.intervalMs ?? 500;
  const step = options.autoextend?.stepPercent ?? DEFAULT_AUTOEXTEND_STEP_PERCENT;
  while (!options.signal?.aborted) {
    const space = hostSpace(record.path);
    if (space.freePercent < minFree) {
      options.onLowSpace?.(space);
      return;
    }
    if (options.autoextend) {
      const status = await snap.status().catch(() => undefined);
      if (!status) return;
      if (status.state === 'active' && status.usedPercent >= options.autoextend.thresholdPercent) {
        const grown = await extendCowFile(snap, record, step, options);
        if (grown !== undefined) options.onExtend?.({ path: record.path, sizeBytes: grown });
      }
    }
    await sleep(intervalMs, undefined, { signal: options.signal }).catch(() => undefined);
  }
}
