/**
 * Dropping a snapshot: it is removed while the origin runs (the kernel unhooks it from the
 * origin's writes), so the origin is suspended only for the swap back to its linear
 * table when it was the last, never while a remove is retried or udev is awaited.
 */
import { DmError, DmsnapError } from '../errors';
import type { Guardian } from '../system/guardian';
import type { LockOptions } from '../system/lock';
import { System } from '../system/system';
import { assertConsistent, BENIGN_FOR_LIFECYCLE, currentGroup } from './invariants';
import type { Origin } from './origin';
import type { DropOptions, Snapshot } from './snapshot';
import { CowRecords } from '../system/cow-records';
import { detachCowLoop, discardCowFile } from './cow-file';
import { stepRunner, type Step } from './steps';
import { mergeState, usesCow } from './merge';
import { removeUnusedCowMappings } from './cow-mapping';

/**
 * Drops `snap` of `origin` under the origin's lock; restores the linear table when it was
 * the last. A COW file dmsnap created for it is deleted (kept with keepCowFile) once the
 * snapshot device is gone.
 */
export async function dropSnapshot(origin: Origin, snap: Snapshot, options: DropOptions = {}): Promise<void> {
  const after = stepRunner(options.onStep);
  const { dm } = origin;
  const system = System.of(dm);
  const lock = await system.lock(origin.name, origin.lockOptions);
  let guardian: Guardian | undefined;
  try {
    const group = await currentGroup(dm, origin.originId);
    await assertConsistent(dm, origin.name, group, BENIGN_FOR_LIFECYCLE);
    // Found by its tag, not by name alone: a device of that name from elsewhere is never touched.
    const target = group.snaps.find((s) => s.name === snap.name);
    const merge = await mergeState(dm, origin.name);
    if (target && merge && (await usesCow(dm, target.name, merge.params.cow))) {
      throw new DmsnapError(
        `snapshot ${snap.name} is being merged back into ${origin.name} (a rollback); it goes once the merge is finished: "dmsnap rollback ${origin.name} --wait"`,
        'ERR_DMSNAP_MERGING',
      );
    }
    const last = group.snaps.every((s) => s.name === snap.name);
    if (last) guardian = system.startGuardian(dm.controlPath, origin.originUuid, lock);
    if (target) {
      await removeSnapshotDevice(origin, snap.name);
      await after('remove-snapshot');
      await removeUnusedCowMappings(dm, group, [target.tag.snapId!]);
      await releaseCowFile(system, origin.lockOptions, origin.originId, target.tag.snapId!, options.keepCowFile === true);
    }
    const [wrapperLine] = await dm.table(origin.name);
    if (guardian && wrapperLine?.type === 'snapshot-origin') await restoreLinear(origin, guardian, after);
  } finally {
    const finished = guardian ? guardian.finish() : Promise.resolve();
    lock();
    await finished;
  }
}

/** Detaches and deletes (or keeps) the COW file of snapshot `snapId`, if dmsnap created one. */
export async function releaseCowFile(system: System, lockOptions: LockOptions, originId: string, snapId: string, keep: boolean): Promise<void> {
  const records = CowRecords.of(lockOptions);
  const record = records.get(originId, snapId);
  if (!record) return;
  await detachCowLoop(system, record);
  discardCowFile(records, record, keep);
}

/** Removes the snapshot device; EBUSY, with what to do, while it is mounted or open. */
async function removeSnapshotDevice(origin: Origin, name: string): Promise<void> {
  const { dm } = origin;
  const info = await dm.find(name);
  if (info && info.openCount > 0) {
    throw new DmsnapError(`snapshot ${name} is mounted or open (open count ${info.openCount}); unmount it or close it first`, 'EBUSY');
  }
  try {
    await dm.remove(name, { retry: true });
  } catch (error) {
    if (error instanceof DmError && error.code === 'EBUSY') {
      throw new DmsnapError(`snapshot ${name} is mounted or open; unmount it or close it first`, 'EBUSY', { cause: error });
    }
    throw error;
  }
}

/** Swaps the origin back to the linear table of NAME-real (no snapshot is left to feed). */
async function restoreLinear(origin: Origin, guardian: Guardian, after: (step: Step) => Promise<void>): Promise<void> {
  const { dm } = origin;
  let loaded = false;
  let suspended = false;
  try {
    await dm.load(origin.name, await dm.table(origin.realName));
    loaded = true;
    await after('load-linear-table');
    await guardian.ready;
    // The filesystem need not be frozen to drop a snapshot: suspend without lockfs.
    await dm.suspend(origin.name, { skipLockfs: true });
    suspended = true;
    await after('suspend-origin');
    await dm.resume(origin.name);
    suspended = false;
  } catch (error) {
    // Back to where it was: the old table live, nothing waiting in the inactive slot.
    if (loaded) await dm.clear(origin.name).catch(() => undefined);
    if (suspended) await dm.resume(origin.name).catch(() => undefined);
    throw error;
  }
  await after('resume-origin');
}
