/**
 * The snapshot target: a read-write view of the origin as it was when the snapshot was
 * created. Chunks that change on the origin (through its snapshot-origin target) are
 * first copied to the COW device; reads of unchanged chunks go to the origin.
 */
import {
  checkDevice,
  checkExtent,
  parseInteger,
  parseSectors,
  splitParams,
  type SectorCount,
  type TargetExtent,
  type TargetLine,
} from '../dm/table';
import type { Sectors } from '../units';
import { check } from '../validate';

/** The smallest chunk dmsnap accepts: 4 KiB, a page, as LVM also requires. */
export const MIN_CHUNK_SECTORS = 8;
/** The largest chunk the kernel accepts: the largest power of two below INT_MAX bytes. */
export const MAX_CHUNK_SECTORS = 2 ** 21;

/** Whether `value` is a power of two of sectors from `minimum` (default 8) to 2^21. */
export function isChunkSize(value: unknown, minimum: number = MIN_CHUNK_SECTORS): value is number {
  return Number.isSafeInteger(value) && (value as number) >= minimum && (value as number) <= MAX_CHUNK_SECTORS && ((value as number) & ((value as number) - 1)) === 0;
}

/** A chunk size in sectors, checked: a power of two from 8 to 2^21. */
export function checkChunkSectors(value: unknown, name = 'chunkSectors'): Sectors {
  check(isChunkSize(value), name, `a power of two from ${MIN_CHUNK_SECTORS} to ${MAX_CHUNK_SECTORS}`, value);
  return value as Sectors;
}

/** Bytes of one exception in the persistent store's metadata ({le64 old_chunk, le64 new_chunk}). */
export const EXCEPTION_BYTES = 16;

/**
 * The smallest persistent COW that can hold every chunk of an origin of `originSectors`:
 * the header chunk, one metadata chunk per area of chunk bytes / 16 exceptions, a data
 * chunk per origin chunk, and one more for the metadata area the kernel zeroes ahead
 * when an area fills (dm-snap-persistent.c). A COW this large never fills because of the
 * origin alone.
 */
export function persistentCowSectors(originSectors: Sectors, chunkSectors: Sectors): Sectors {
  const dataChunks = Math.ceil(originSectors / chunkSectors);
  const perArea = (chunkSectors * 512) / EXCEPTION_BYTES;
  const chunks = 1 + dataChunks + Math.ceil(dataChunks / perArea) + 1;
  return (chunks * chunkSectors) as Sectors;
}

/**
 * How the exception store is kept: P persistent (survives reboots; the COW device holds
 * metadata), PO persistent and able to report "Overflow" (see
 * {@link SnapshotTargetOptions.overflow}), N transient (metadata in memory only).
 */
export type SnapshotPersistence = 'P' | 'PO' | 'N';

/** The snapshot target's optional features, as the kernel names them. */
export type SnapshotFeature = 'discard_zeroes_cow' | 'discard_passdown_origin';

/** Options of snapshot() and snapshotMerge(). */
export interface SnapshotTargetOptions extends TargetExtent {
  /** The origin device (usually the `NAME-real` linear mapping): a path or MAJOR:MINOR. */
  origin: string;
  /** The copy-on-write device that receives the origin's old chunks. */
  cow: string;
  /** Keep the exception store on the COW device; true by default. */
  persistent?: boolean;
  /**
   * When writes to the snapshot itself fill the COW device, fail them and report
   * "Overflow" instead of invalidating the snapshot, which stays readable (a full COW
   * device on an origin write still invalidates it). Persistent snapshots only; false
   * by default.
   */
  overflow?: boolean;
  /** The copy-on-write granularity: a power of two from 8 (4 KiB) to 2097152 (1 GiB). */
  chunkSectors: SectorCount;
  /** A discard of whole chunks on the snapshot zeroes them in the COW device. */
  discardZeroesCow?: boolean;
  /** Discards on the snapshot also go down to the origin's device; needs discardZeroesCow. */
  discardPassdownOrigin?: boolean;
}

/** The parameters of a snapshot (or snapshot-merge) target. */
export interface SnapshotParams {
  /** As given; the kernel reports it back as MAJOR:MINOR. */
  origin: string;
  /** As given; the kernel reports it back as MAJOR:MINOR. */
  cow: string;
  /** Upper case whatever the case in the table. */
  persistence: SnapshotPersistence;
  /** Whether persistence is P or PO. */
  persistent: boolean;
  /** Whether persistence is PO. */
  overflow: boolean;
  /** 0 for a snapshot whose exceptions were handed over to another table (a rollback's snapshot-merge). */
  chunkSectors: Sectors;
  /** Optional features, in table order; names the kernel may add later are kept too. */
  features: string[];
}

/**
 * What a snapshot's status says. `active`: the snapshot is usable, and the COW device
 * has `allocatedSectors` of its `totalSectors` in use, `metadataSectors` of them for the
 * exception store's own metadata. `invalid`: the COW device filled up (or failed) and
 * the snapshot is lost. `overflow`: a PO snapshot's COW device is full; it is still
 * readable. `merge-failed`: a snapshot-merge hit an error. `unknown`: the exception
 * store cannot report its usage.
 */
export type SnapshotStatus =
  | {
      state: 'active';
      allocatedSectors: Sectors;
      totalSectors: Sectors;
      metadataSectors: Sectors;
      /** allocatedSectors − metadataSectors: copied chunks. */
      dataSectors: Sectors;
      /** allocatedSectors / totalSectors × 100, not rounded. */
      usedPercent: number;
    }
  | { state: 'invalid' }
  | { state: 'overflow' }
  | { state: 'merge-failed' }
  | { state: 'unknown' };

/**
 * A snapshot target line: params `ORIGIN COW P|PO|N CHUNK`, then `COUNT FEATURE...` when
 * a feature is on. The origin's own table must be switched to snapshot-origin for the
 * snapshot to stay consistent.
 */
export function snapshot(options: SnapshotTargetOptions): TargetLine {
  const extent = checkExtent(options);
  const { origin, cow, chunkSectors } = options;
  checkDevice(origin, 'origin');
  checkDevice(cow, 'cow');
  // Different names may still be one device, but the same name surely is.
  check(cow !== origin, 'cow', 'a device other than the origin', cow);
  const persistent = optionalBoolean(options.persistent, 'persistent', true);
  const overflow = optionalBoolean(options.overflow, 'overflow', false);
  check(!overflow || persistent, 'overflow', 'false for a transient (persistent: false) snapshot', overflow);
  checkChunkSectors(chunkSectors);
  const zeroesCow = optionalBoolean(options.discardZeroesCow, 'discardZeroesCow', false);
  const passdown = optionalBoolean(options.discardPassdownOrigin, 'discardPassdownOrigin', false);
  // The kernel refuses passdown alone ("depends on discard_zeroes_cow").
  check(!passdown || zeroesCow, 'discardPassdownOrigin', 'false unless discardZeroesCow is true', passdown);

  const persistence: SnapshotPersistence = persistent ? (overflow ? 'PO' : 'P') : 'N';
  // Features in the order the kernel prints them, so a table reads back unchanged.
  const features: SnapshotFeature[] = [];
  if (zeroesCow) features.push('discard_zeroes_cow');
  if (passdown) features.push('discard_passdown_origin');
  const tail = features.length > 0 ? ` ${features.length} ${features.join(' ')}` : '';
  return { ...extent, type: 'snapshot', params: `${origin} ${cow} ${persistence} ${chunkSectors}${tail}` };
}

/** Reads a snapshot target's params, e.g. "254:1 7:1 P 32" from `dmsetup table`. */
export function parseSnapshotParams(params: string): SnapshotParams {
  const words = splitParams(params, 'snapshot params');
  check(words.length >= 4, 'snapshot params', 'ORIGIN COW P|PO|N CHUNK [COUNT FEATURE...]', params);
  const [origin, cow, store, chunk, count, ...features] = words as [string, string, string, string, ...string[]];
  // The kernel reads the store type case-insensitively.
  const persistence = store.toUpperCase();
  check(persistence === 'P' || persistence === 'PO' || persistence === 'N', 'snapshot persistence', 'P, PO or N', store);
  // 0 is what the kernel reports for a snapshot whose exceptions it handed over (to the
  // snapshot-merge of a rollback): its store is the new table's empty one.
  const chunkSectors = parseSectors(chunk, 'snapshot chunk size');
  if (count !== undefined) {
    check(
      parseInteger(count, 'snapshot feature count') === features.length,
      'snapshot feature count',
      `${features.length}, the number of features that follow`,
      count,
    );
  }
  return {
    origin,
    cow,
    persistence,
    persistent: persistence !== 'N',
    overflow: persistence === 'PO',
    chunkSectors,
    features,
  };
}

/**
 * Reads a snapshot's status (`dmsetup status` text after the type): "Invalid",
 * "Merge failed", "Overflow", "Unknown", or "ALLOCATED/TOTAL METADATA" — just
 * "ALLOCATED/TOTAL" from older kernels, which did not report metadata (read as 0).
 */
export function parseSnapshotStatus(status: string): SnapshotStatus {
  const words = splitParams(status, 'snapshot status');
  const text = words.join(' ');
  // The words are matched as prefixes so that anything a later kernel appends is ignored.
  if (text.startsWith('Invalid')) return { state: 'invalid' };
  if (text.startsWith('Merge failed')) return { state: 'merge-failed' };
  if (text.startsWith('Overflow')) return { state: 'overflow' };
  if (text.startsWith('Unknown')) return { state: 'unknown' };

  const usage = /^([0-9]+)\/([0-9]+)$/.exec(words[0] ?? '');
  const metadata = words[1];
  check(
    usage !== null && (metadata === undefined || /^[0-9]+$/.test(metadata)),
    'snapshot status',
    '"ALLOCATED/TOTAL METADATA", "Invalid", "Merge failed", "Overflow" or "Unknown"',
    status,
  );
  const allocatedSectors = parseSectors(usage[1], 'snapshot allocated sectors');
  const totalSectors = parseSectors(usage[2], 'snapshot total sectors');
  const metadataSectors = parseSectors(metadata ?? '0', 'snapshot metadata sectors');
  return {
    state: 'active',
    allocatedSectors,
    totalSectors,
    metadataSectors,
    // The kernel counts metadata within the allocation; never report less than nothing.
    dataSectors: Math.max(0, allocatedSectors - metadataSectors) as Sectors,
    usedPercent: totalSectors === 0 ? 0 : (allocatedSectors * 100) / totalSectors,
  };
}

function optionalBoolean(value: unknown, name: string, fallback: boolean): boolean {
  check(value === undefined || typeof value === 'boolean', name, 'a boolean', value);
  return value ?? fallback;
}
