/**
 * The snapshot-merge target: takes over a snapshot's COW device and copies its chunks
 * back into the origin, rolling the origin back to the snapshot. It replaces the
 * origin's snapshot-origin table; the origin stays usable while the merge runs. Its
 * params and status are the snapshot target's.
 */
import type { TargetLine } from '../dm/table';
import { check } from '../validate';
import {
  parseSnapshotParams,
  parseSnapshotStatus,
  snapshot,
  type SnapshotTargetOptions,
  type SnapshotParams,
  type SnapshotStatus,
} from './snapshot';

/**
 * A snapshot-merge target line, with the same params as {@link snapshot}. Only a
 * persistent exception store can be merged.
 */
export function snapshotMerge(options: SnapshotTargetOptions): TargetLine {
  const line = snapshot(options);
  check(options.persistent !== false, 'persistent', 'true for snapshot-merge, which needs a persistent COW device', options.persistent);
  return { ...line, type: 'snapshot-merge' };
}

/** Reads a snapshot-merge target's params, e.g. "254:1 7:1 P 32"; as for snapshot. */
export function parseSnapshotMergeParams(params: string): SnapshotParams {
  return parseSnapshotParams(params);
}

/**
 * Reads a snapshot-merge target's status, as for snapshot. While the merge runs,
 * allocatedSectors falls; it is done when dataSectors reaches 0 (only metadata left).
 */
export function parseSnapshotMergeStatus(status: string): SnapshotStatus {
  return parseSnapshotStatus(status);
}
