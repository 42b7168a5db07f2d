/**
 * A snapshot's SnapshotInfo read back from its table (the kernel names devices by number),
 * for snapshots found in the kernel rather than just taken.
 */
import { parseDevKey } from '../dev-number';
import { devicePathOf } from '../system/stack';
import { parseSnapshotParams } from '../targets/snapshot';
import type { SnapshotInfo } from './snapshot';

/** Reads a snapshot device's table into a SnapshotInfo. */
export function snapshotInfoFromTable(
  name: string,
  originName: string,
  type: string,
  params: string,
  ids: Pick<SnapshotInfo, 'snapId' | 'cowFile' | 'trackingSince'> & { cowDevice?: SnapshotInfo['cowDevice'] },
): SnapshotInfo {
  const parsed = parseSnapshotParams(params);
  // The kernel names both devices by number.
  const cowNumber = parseDevKey(parsed.cow) ?? { major: 0, minor: 0 };
  const cow = { ...cowNumber, path: devicePathOf(cowNumber) ?? null };
  const origin = parseDevKey(parsed.origin) ?? { major: 0, minor: 0 };
  return { name, originName, origin, cowDevice: cow, ...ids, cow, chunkSectors: parsed.chunkSectors, persistent: parsed.persistent, targetType: type };
}
