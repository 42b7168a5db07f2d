/**
 * Rollback: merging a snapshot back into its origin with the kernel's snapshot-merge
 * target, as `lvconvert --merge` does. Refused while NAME is mounted or open (a mounted
 * filesystem must not see its blocks change under it), for a transient or invalid
 * snapshot, and while another merge runs. The start is four calls under the origin's lock:
 * snapshot-merge staged in NAME's inactive slot, the snapshot suspended (the kernel hands
 * a snapshot's exceptions over only from a suspended one), NAME resumed (the kernel
 * suspends it, swaps the table, hands the exceptions over and starts copying), the
 * snapshot resumed (invalid from now on: the merge owns its COW). NAME reads as the
 * snapshot from that moment, and may be mounted again at once; the copy runs in the
 * background, and finishMerge (merge.ts) ends it once it is done.
 */
import { DmsnapError } from '../errors';
import type { Guardian } from '../system/guardian';
import type { HeldBlockDevice } from '../system/held-device';
import { System } from '../system/system';
import { parseSnapshotParams } from '../targets/snapshot';
import { snapshotMerge } from '../targets/snapshot-merge';
import { sectors, type Sectors } from '../units';
import { HIDDEN_LAYER } from './context';
import { assertConsistent, BENIGN_FOR_LIFECYCLE, currentGroup } from './invariants';
import { finishMerge, mergeState, type MergeState } from './merge';
import type { Origin } from './origin';
import type { Snapshot } from './snapshot';
import { stepRunner, type Step, type StepHook } from './steps';
import { formatTag } from './tags';
import { backOutSwap } from './back-out';
import { restingState, updateCowLabel } from './cow-mapping';
import { devKey } from '../system/stack';
import { scheduleRollbackAtBoot } from './rollback-at-boot';

/** How far a merge is, for a progress display. */
export interface MergeProgress {
  /** Sectors of data still to copy back. */
  leftSectors: Sectors;
  /** Sectors of data there were when this wait began. */
  startSectors: Sectors;
  /** Copied since this wait began, 0 to 100. */
  percent: number;
}

/** Options of Snapshot.rollback and Origin.waitForMerge. */
export interface RollbackOptions {
  /** Wait until the merge is done and finish it (default false: the merge runs on in the kernel). */
  wait?: boolean;
  /** Called with the progress while waiting, about every pollMs. */
  onProgress?: (progress: MergeProgress) => void;
  /** How often the merge's status is read while waiting, in ms (default 500). */
  pollMs?: number;
  /**
   * Do not merge now: record the rollback in the snapshot's COW label, for the next
   * `prepare --attach` (after a clean detach) to start before the origin is mounted. For
   * a filesystem that cannot be unmounted now; the origin may stay mounted. The snapshot
   * must be persistent and on a COW device. Not with wait.
   */
  atBoot?: boolean;
  /** Stops the wait (the merge runs on in the kernel). */
  signal?: AbortSignal;
  /** @internal Test hook called after each step. */
  onStep?: StepHook;
}

type After = (step: Step) => Promise<void>;

const OPEN_RETRIES = 10;
const OPEN_RETRY_MS = 100;

/** What a failed start must undo. */
interface Progress {
  step: Step | 'validate';
  loaded: boolean;
  snapshotSuspended: boolean;
  merging: boolean;
  /** The label under the snapshot's COW mapping says merging. */
  marked: boolean;
}

/** Starts merging `snap` back into `origin` (see the file comment); with wait, also waits and finishes. */
export async function rollBackTo(origin: Origin, snap: Snapshot, options: RollbackOptions = {}): Promise<void> {
  if (options.atBoot === true) return scheduleRollbackAtBoot(origin, snap);
  const after = stepRunner(options.onStep);
  await startMerge(origin, snap, after);
  if (options.wait === true) await waitForMerge(origin, options);
}

async function startMerge(origin: Origin, snap: Snapshot, after: After): Promise<void> {
  const { dm } = origin;
  const system = System.of(dm);
  const lock = await system.lock(origin.name, origin.lockOptions);
  const progress: Progress = { step: 'validate', loaded: false, snapshotSuspended: false, merging: false, marked: false };
  let held: HeldBlockDevice | undefined;
  let guardian: Guardian | undefined;
  try {
    const { snapUuid, params } = await checkRollback(origin, snap);
    held = await holdUnused(origin);
    guardian = system.startGuardian(dm.controlPath, [origin.originUuid, snapUuid], lock);
    const line = snapshotMerge({ length: sectors(origin.sizeSectors), origin: params.origin, cow: params.cow, persistent: true, chunkSectors: params.chunkSectors });
    // The label first: a merge interrupted by a crash resumes at the next attach.
    progress.step = 'mark-merging';
    if (devKey(snap.info.cow) !== devKey(snap.info.cowDevice)) {
      await updateCowLabel(system, snap.info.cowDevice, (label) => ({ ...label, state: 'merging', rollbackAtBoot: null }));
      progress.marked = true;
    }
    await after(progress.step);
    progress.step = 'load-merge-table';
    await dm.load(origin.name, [line]);
    progress.loaded = true;
    await after(progress.step);
    await guardian.ready;
    progress.step = 'suspend-snapshot';
    await dm.suspend(snap.name, { skipLockfs: true });
    progress.snapshotSuspended = true;
    await after(progress.step);
    progress.step = 'start-merge';
    await dm.resume(origin.name, { skipLockfs: true });
    progress.loaded = false;
    progress.merging = true;
    await after(progress.step);
    progress.step = 'resume-merged-snapshot';
    await dm.resume(snap.name, { udevFlags: HIDDEN_LAYER });
    progress.snapshotSuspended = false;
    await after(progress.step);
  } catch (error) {
    if (progress.step === 'validate') throw error;
    await undoStart(origin, snap, progress);
    throw new DmsnapError(
      `rollback of ${origin.name} to snapshot ${snap.name} failed at step "${progress.step}": ${(error as Error).message}. ` +
        (progress.merging ? `The merge runs: "dmsnap rollback ${origin.name} --wait" finishes it` : `${origin.name} runs its previous table; nothing was merged`),
      error instanceof DmsnapError ? error.code : 'ERR_DMSNAP_MERGE_FAILED',
      { cause: error },
    );
  } finally {
    held?.close();
    const finished = guardian ? guardian.finish() : Promise.resolve();
    lock();
    await finished;
  }
}

/** The refusals, before anything changes; returns the snapshot's uuid and table params. */
async function checkRollback(origin: Origin, snap: Snapshot) {
  const { dm } = origin;
  const group = await currentGroup(dm, origin.originId);
  await assertConsistent(dm, origin.name, group, BENIGN_FOR_LIFECYCLE);
  if (await mergeState(dm, origin.name)) {
    throw new DmsnapError(`${origin.name} is already merging a snapshot back; "dmsnap rollback ${origin.name} --wait" waits for it`, 'ERR_DMSNAP_MERGING');
  }
  const device = group.snaps.find((s) => s.name === snap.name);
  if (!device) throw new DmsnapError(`${origin.name} has no snapshot named "${snap.name}"; see "dmsnap status ${origin.name}"`, 'ENXIO');
  const [line] = await dm.table(snap.name);
  const params = parseSnapshotParams(line?.params ?? '');
  if (!params.persistent) {
    throw new DmsnapError(`snapshot ${snap.name} is transient (N): the kernel merges only a persistent exception store back; take the snapshot persistent`, 'ERR_DMSNAP_NOT_PERSISTENT');
  }
  const report = await snap.status();
  if (report.state !== 'active') {
    throw new DmsnapError(`snapshot ${snap.name} is ${report.state}: it no longer holds the origin's old blocks, so there is nothing to roll back to`, 'ERR_DMSNAP_SNAPSHOT_INVALID');
  }
  const info = await dm.info(snap.name);
  if (info.openCount > 0) throw new DmsnapError(`snapshot ${snap.name} is mounted or open (open count ${info.openCount}); unmount it first`, 'EBUSY');
  return { snapUuid: formatTag(device.tag), params };
}

/**
 * Opens NAME exclusively (EBUSY while it is mounted or held), and checks that nothing else
 * has it open: held until the merge runs, so that nothing mounts it meanwhile.
 */
async function holdUnused(origin: Origin): Promise<HeldBlockDevice> {
  const busy = (why: string) =>
    new DmsnapError(`${origin.devicePath} is ${why}: a rollback changes its blocks, which a mounted filesystem must not see; unmount it (and close it) first`, 'EBUSY');
  let held: HeldBlockDevice;
  try {
    held = await System.of(origin.dm).openBlockDevice(origin.devicePath, { exclusive: true, writable: false });
  } catch (error) {
    if ((error as { code?: string }).code === 'EBUSY') throw busy('mounted or held');
    throw error;
  }
  // udev probes a device for a moment after a writer closes it: an open that goes away
  // within a second is not a user's.
  for (let tries = 0; ; tries++) {
    const { openCount } = await origin.dm.info(origin.name);
    if (openCount <= 1) return held;
    if (tries === OPEN_RETRIES) {
      held.close();
      throw busy(`open (open count ${openCount - 1} besides dmsnap)`);
    }
    await new Promise((resolve) => setTimeout(resolve, OPEN_RETRY_MS));
  }
}

/** Back to where the start found it, or, once the merge runs, the snapshot resumed. */
async function undoStart(origin: Origin, snap: Snapshot, progress: Progress): Promise<void> {
  const { dm } = origin;
  await backOutSwap(dm, origin.name, { staged: progress.loaded });
  if (progress.marked && !progress.merging) await updateCowLabel(System.of(dm), snap.info.cowDevice, (label) => ({ ...label, state: restingState(label) })).catch(() => undefined);
  if (progress.snapshotSuspended) await dm.resume(snap.name, { udevFlags: HIDDEN_LAYER }).catch(() => undefined);
}

/**
 * Waits until the merge NAME runs is done, then finishes it (under the lock). Resolves at
 * once when no merge runs. Fails on a merge the kernel stopped (`Merge failed`).
 */
export async function waitForMerge(origin: Origin, options: RollbackOptions = {}): Promise<void> {
  const pollMs = options.pollMs ?? 500;
  let start: Sectors | undefined;
  for (;;) {
    options.signal?.throwIfAborted();
    const state = await mergeState(origin.dm, origin.name);
    if (!state) return;
    if (state.failed) throw mergeFailed(origin, state);
    const left = state.status.state === 'active' ? state.status.dataSectors : undefined;
    if (left !== undefined) {
      start ??= left;
      options.onProgress?.({ leftSectors: left, startSectors: start, percent: start === 0 ? 100 : (100 * (start - left)) / start });
    }
    if (state.done) break;
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
  await finishMergeLocked(origin, options.onStep);
}

/**
 * Finishes NAME's merge if it is done, under the origin's lock (taken only then); returns
 * whether it did.
 */
export async function finishMergeLocked(origin: Origin, onStep?: StepHook): Promise<boolean> {
  if (!(await mergeState(origin.dm, origin.name))?.done) return false;
  const lock = await System.of(origin.dm).lock(origin.name, origin.lockOptions);
  try {
    const state = await mergeState(origin.dm, origin.name);
    if (!state?.done) return false;
    const owner = { dm: origin.dm, name: origin.name, realName: origin.realName, originId: origin.originId, lockOptions: origin.lockOptions };
    await finishMerge(owner, state, stepRunner(onStep));
    return true;
  } finally {
    lock();
  }
}

function mergeFailed(origin: Origin, state: MergeState): DmsnapError {
  return new DmsnapError(
    `the merge of COW ${state.params.cow} into ${origin.name} stopped on an error (the kernel reports ${state.status.state}; see the kernel log): ` +
      `${origin.name} still reads as the snapshot, but its device holds part of the snapshot's blocks and part of the later ones. ` +
      'dmsnap leaves it as it is: do not drop it; fix the device error, then copy the data off or restore it from a backup',
    'ERR_DMSNAP_MERGE_FAILED',
  );
}
