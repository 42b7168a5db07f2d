/**
 * The snapshot-origin target: passes I/O through to the origin device, but first copies
 * each chunk about to be overwritten into the COW device of every snapshot of it. Its
 * status text is empty.
 */
import { checkDevice, checkExtent, splitParams, type TargetExtent, type TargetLine } from '../dm/table';
import { check } from '../validate';

/** Options of snapshotOrigin(). */
export interface SnapshotOriginOptions extends TargetExtent {
  /** The device whose snapshots are kept: a path or MAJOR:MINOR. */
  origin: string;
}

/** The parameters of a snapshot-origin target. */
export interface SnapshotOriginParams {
  /** As given; the kernel reports it back as MAJOR:MINOR. */
  origin: string;
}

/** A snapshot-origin target line: params `ORIGIN`. */
export function snapshotOrigin(options: SnapshotOriginOptions): TargetLine {
  const extent = checkExtent(options);
  checkDevice(options.origin, 'origin');
  return { ...extent, type: 'snapshot-origin', params: options.origin };
}

/** Reads a snapshot-origin target's params, e.g. "254:1" from `dmsetup table`. */
export function parseSnapshotOriginParams(params: string): SnapshotOriginParams {
  const words = splitParams(params, 'snapshot-origin params');
  check(words.length === 1, 'snapshot-origin params', 'ORIGIN', params);
  return { origin: words[0] as string };
}
