/**
 * A merge in progress: after a rollback starts, the origin NAME runs `snapshot-merge
 * NAME-real COW P CHUNK` over the COW of the snapshot being rolled back to, and the kernel
 * copies the COW's chunks back into NAME-real in the background. What NAME reads is the
 * snapshot's content from the first moment; the merge is done when only the exception
 * store's metadata is left. The snapshot device that was merged stays (invalid: the kernel
 * handed its exceptions over) until the merge is finished: NAME back on snapshot-origin
 * (other snapshots) or linear, the merged snapshot removed and its COW file released.
 */
import type { DeviceMapper } from '../dm/device-mapper';
import { DmError } from '../errors';
import type { LockOptions } from '../system/lock';
import { System } from '../system/system';
import { parseSnapshotParams, parseSnapshotStatus, type SnapshotParams, type SnapshotStatus } from '../targets/snapshot';
import { snapshotOrigin } from '../targets/snapshot-origin';
import { sectors, type Sectors } from '../units';
import { releaseCowFile } from './drop';
import { removeUnusedCowMappings } from './cow-mapping';
import { currentGroup } from './invariants';
import type { TaggedDevice } from './discover';
import type { Step } from './steps';
import { backOutSwap } from './back-out';

/** The merge NAME runs, as the kernel reports it. */
export interface MergeState {
  /** NAME's snapshot-merge params: NAME-real and the COW being merged, as MAJOR:MINOR. */
  params: SnapshotParams;
  /** The length of NAME's table, in sectors. */
  lengthSectors: Sectors;
  /** The target's status: while it runs, `dataSectors` is what is left to copy back. */
  status: SnapshotStatus;
  /** Only metadata is left: every chunk is back in the origin. */
  done: boolean;
  /** The kernel stopped the merge on an error (`Merge failed`), or the store is invalid. */
  failed: boolean;
}

/** The merge NAME runs, or undefined when NAME runs no snapshot-merge table (or is gone). */
export async function mergeState(dm: DeviceMapper, name: string): Promise<MergeState | undefined> {
  let line;
  try {
    [line] = await dm.table(name);
  } catch (error) {
    if (error instanceof DmError && error.code === 'ENXIO') return undefined;
    throw error;
  }
  if (line?.type !== 'snapshot-merge') return undefined;
  const [statusLine] = await dm.status(name);
  const status = parseSnapshotStatus(statusLine?.params ?? '');
  return {
    params: parseSnapshotParams(line.params),
    lengthSectors: line.length,
    status,
    done: status.state === 'active' && status.dataSectors === 0,
    failed: status.state === 'merge-failed' || status.state === 'invalid',
  };
}

/** Whether a snapshot device's table uses COW `cow` (MAJOR:MINOR): the one being merged. */
export async function usesCow(dm: DeviceMapper, name: string, cow: string): Promise<boolean> {
  const [line] = await dm.table(name).catch(() => []);
  return line !== undefined && (line.type === 'snapshot' || line.type === 'snapshot-merge') && parseSnapshotParams(line.params).cow === cow;
}

/** What finishing a merge needs to know of the origin. */
export interface MergeOwner {
  dm: DeviceMapper;
  name: string;
  realName: string;
  originId: string;
  lockOptions: LockOptions;
}

/**
 * Finishes a merge that is done; the caller holds the origin's lock. NAME goes back to
 * snapshot-origin (when other snapshots remain) or to NAME-real's linear table in one
 * resume (the kernel suspends, swaps and resumes inside it: what NAME reads does not
 * change, so it may be mounted), then the merged snapshot is removed and its COW file
 * released. Returns the names of the snapshots removed.
 */
export async function finishMerge(owner: MergeOwner, state: MergeState, after: (step: Step) => Promise<void>): Promise<string[]> {
  const { dm } = owner;
  const merged: TaggedDevice[] = [];
  const others: TaggedDevice[] = [];
  const group = await currentGroup(dm, owner.originId);
  for (const snap of group.snaps) {
    (await usesCow(dm, snap.name, state.params.cow) ? merged : others).push(snap);
  }
  const table = others.length > 0 ? [snapshotOrigin({ length: sectors(state.lengthSectors), origin: state.params.origin })] : await dm.table(owner.realName);
  await dm.load(owner.name, table);
  try {
    await after('load-final-table');
    await dm.resume(owner.name, { skipLockfs: true });
  } catch (error) {
    // Back to the merge table.
    await backOutSwap(dm, owner.name, { staged: true });
    throw error;
  }
  await after('swap-final-table');
  const system = System.of(dm);
  // The merged COW's mapping goes with its snapshot (or alone, when the snapshot went first).
  const mergedIds = [...merged.map((s) => s.tag.snapId!), ...group.cows.filter((c) => `${c.major}:${c.minor}` === state.params.cow).map((c) => c.tag.snapId!)];
  for (const snap of merged) await dm.remove(snap.name, { retry: true });
  await removeUnusedCowMappings(dm, group, mergedIds);
  for (const snapId of new Set(mergedIds)) await releaseCowFile(system, owner.lockOptions, owner.originId, snapId, false);
  await after('remove-merged-snapshot');
  return merged.map((s) => s.name);
}
