/**
 * A rollback for a filesystem that cannot be unmounted now: `rollback --at-boot` records it
 * in the snapshot's COW label, and changes nothing else. The snapshot goes on as before;
 * the detach at shutdown seals the label with the request in it, and the next
 * `prepare --attach` starts the merge before anything mounts the origin (reattach.ts), as
 * for a merge a detach interrupted. A crash in between leaves the label unsealed, and the
 * attach refuses it: nothing proves that the snapshot still holds the origin's old blocks.
 * Only a snapshot that can outlive a detach can be scheduled: persistent, on a COW
 * device (not a COW file), of an origin with a fingerprint.
 */
import { DmsnapError } from '../errors';
import { devKey } from '../system/stack';
import { System } from '../system/system';
import { parseSnapshotParams } from '../targets/snapshot';
import { readCowLabel, updateCowLabel } from './cow-mapping';
import { originFingerprint } from './detach';
import { assertConsistent, BENIGN_FOR_LIFECYCLE, currentGroup } from './invariants';
import { mergeState } from './merge';
import type { Origin } from './origin';
import type { Snapshot } from './snapshot';

/** The rollback recorded for the next boot. */
export interface RollbackAtBoot {
  /** The snapshot to merge back. */
  snapshot: string;
  /** When it was asked for, ISO 8601. */
  scheduledAt: string;
}

/** Records a rollback of `origin` to `snap` for the next attach (see above). */
export async function scheduleRollbackAtBoot(origin: Origin, snap: Snapshot): Promise<void> {
  const system = System.of(origin.dm);
  const lock = await system.lock(origin.name, origin.lockOptions);
  try {
    await checkSchedule(origin, snap);
    const scheduled = await findScheduled(origin);
    if (scheduled && scheduled.snapshot !== snap.name) {
      throw new DmsnapError(
        `a rollback of ${origin.name} to ${scheduled.snapshot} is already recorded for the next boot; "dmsnap rollback ${origin.name} --cancel" cancels it`,
        'ERR_DMSNAP_MERGING',
      );
    }
    await updateCowLabel(system, snap.info.cowDevice, (label) => ({ ...label, rollbackAtBoot: new Date().toISOString() }));
  } finally {
    lock();
  }
}

/** The snapshot's refusals: what cannot come back at the next boot, or cannot be merged. */
async function checkSchedule(origin: Origin, snap: Snapshot): Promise<void> {
  const { dm } = origin;
  const group = await currentGroup(dm, origin.originId);
  await assertConsistent(dm, origin.name, group, BENIGN_FOR_LIFECYCLE);
  if (await mergeState(dm, origin.name)) {
    throw new DmsnapError(`${origin.name} is merging a snapshot back now; "dmsnap rollback ${origin.name} --wait" waits for it`, 'ERR_DMSNAP_MERGING');
  }
  if (!group.snaps.some((s) => s.name === snap.name)) throw new DmsnapError(`${origin.name} has no snapshot named "${snap.name}"; see "dmsnap status ${origin.name}"`, 'ENXIO');
  const [line] = await dm.table(snap.name);
  if (!parseSnapshotParams(line?.params ?? '').persistent) {
    throw new DmsnapError(`snapshot ${snap.name} is transient (N): it does not outlive a reboot, so it cannot be merged back at boot`, 'ERR_DMSNAP_NOT_PERSISTENT');
  }
  if (snap.info.cowFile !== null || devKey(snap.info.cow) === devKey(snap.info.cowDevice)) {
    throw new DmsnapError(`snapshot ${snap.name} is on a COW file: it does not outlive a reboot, so it cannot be merged back at boot; take it on a COW device`, 'ERR_DMSNAP_NOT_PERSISTENT');
  }
  const report = await snap.status();
  if (report.state !== 'active') {
    throw new DmsnapError(`snapshot ${snap.name} is ${report.state}: it no longer holds the origin's old blocks, so there is nothing to roll back to`, 'ERR_DMSNAP_SNAPSHOT_INVALID');
  }
  if (!(await originFingerprint(origin))) {
    throw new DmsnapError(
      `${origin.name} holds no ext4, XFS (internal log) or btrfs: its snapshots cannot outlive a detach, so none can be merged back at boot; unmount it and run "dmsnap rollback ${origin.name}"`,
      'ERR_DMSNAP_NO_FINGERPRINT',
    );
  }
}

/** The rollback recorded for the next boot on one of `origin`'s snapshots, or null. */
export async function findScheduled(origin: Origin): Promise<RollbackAtBoot | null> {
  const system = System.of(origin.dm);
  for (const snap of await origin.snapshots()) {
    if (devKey(snap.info.cow) === devKey(snap.info.cowDevice)) continue;
    const label = await readCowLabel(system, snap.info.cowDevice).catch(() => undefined);
    if (label?.rollbackAtBoot) return { snapshot: snap.name, scheduledAt: label.rollbackAtBoot };
  }
  return null;
}

/** Cancels the rollback recorded for the next boot; the snapshot it named, or null when none was. */
export async function cancelRollbackAtBoot(origin: Origin): Promise<string | null> {
  const system = System.of(origin.dm);
  const lock = await system.lock(origin.name, origin.lockOptions);
  try {
    const scheduled = await findScheduled(origin);
    if (!scheduled) return null;
    const snap = (await origin.snapshots()).find((s) => s.name === scheduled.snapshot)!;
    await updateCowLabel(system, snap.info.cowDevice, (label) => ({ ...label, rollbackAtBoot: null }));
    return scheduled.snapshot;
  } finally {
    lock();
  }
}
