/**
 * Detaching an origin cleanly, once its filesystem is unmounted (the prepare unit runs it
 * at shutdown): NAME goes first, so that nothing writes the origin through dmsnap any
 * more; then the origin's fingerprint (targets/origin-fingerprint.ts) is sealed into the
 * label of each snapshot on a COW device, and every device of the origin is removed. The
 * labelled COWs keep their snapshots, for `prepare --attach` to bring back: only while the
 * origin still shows the sealed fingerprint. Snapshots that cannot come back (transient,
 * on a COW file) are dropped.
 */
import type { DeviceMapper } from '../dm/device-mapper';
import { DmsnapError, DmError } from '../errors';
import { System } from '../system/system';
import type { LabelState } from '../targets/cow-label';
import { fingerprintOrigin, type OriginFingerprint } from '../targets/origin-fingerprint';
import { mappedCow, removeUnusedCowMappings, updateCowLabel } from './cow-mapping';
import type { TaggedDevice } from './discover';
import { releaseCowFile } from './drop';
import { assertConsistent, BENIGN_FOR_LIFECYCLE, currentGroup } from './invariants';
import { mergeState } from './merge';
import type { Origin } from './origin';
import { stepRunner, type StepHook } from './steps';
import { recordedCowFile } from './cow-file';

/** What detach did with each snapshot. */
export interface DetachReport {
  origin: string;
  /** The filesystem whose fingerprint was sealed, or null when no snapshot needed one. */
  fs: string | null;
  /** Snapshots left on their COW devices, sealed, to be attached again. */
  sealed: { snapshot: string; cow: string; state: LabelState }[];
  /** Snapshots that cannot outlive the detach (transient, or on a COW file), dropped. */
  dropped: string[];
  /** The snapshot the next attach merges back (`rollback --at-boot`), or null. */
  rollbackAtBoot: string | null;
}

/** Options of Origin.detach. */
export interface DetachOptions {
  /** @internal Test hook called after each step. */
  onStep?: StepHook;
}

/** Detaches `origin` (see above); EBUSY while it or a snapshot is mounted or open. */
export async function detachOrigin(origin: Origin, options: DetachOptions = {}): Promise<DetachReport> {
  const after = stepRunner(options.onStep);
  const { dm } = origin;
  const system = System.of(dm);
  const lock = await system.lock(origin.name, origin.lockOptions);
  try {
    const group = await currentGroup(dm, origin.originId);
    await assertConsistent(dm, origin.name, group, BENIGN_FOR_LIFECYCLE);
    await assertUnused(dm, origin.name, group.snaps);
    const merge = await mergeState(dm, origin.name);
    // Which snapshots stay: those on a COW mapping over a device (not a COW file).
    const kept = group.cows.filter((c) => recordedCowFile(origin.lockOptions, origin.originId, c.tag.snapId!) === null);
    const fingerprint = kept.length > 0 ? await originFingerprint(origin) : undefined;
    if (kept.length > 0 && !fingerprint) {
      throw new DmsnapError(
        `${origin.name} holds no ext4, XFS (internal log) or btrfs: dmsnap could not tell at the next attach whether it was written meanwhile, ` +
          'so its snapshots cannot outlive a detach; drop them, or keep the origin prepared',
        'ERR_DMSNAP_NO_FINGERPRINT',
      );
    }
    await removeOrigin(dm, origin.name);
    await after('remove-origin');
    const sealed: DetachReport['sealed'] = [];
    let rollbackAtBoot: string | null = null;
    for (const mapping of kept) {
      const cow = await mappedCow(dm, mapping.name);
      if (!cow) continue;
      const merging = merge?.params.cow === `${mapping.major}:${mapping.minor}`;
      const label = await updateCowLabel(system, cow, (current) => ({
        ...current,
        // What the kernel runs now decides: a merge in progress resumes at the attach.
        state: merging ? 'merging' : current.snapshot.trackingSince !== null ? 'tracking' : 'active',
        seal: { fs: fingerprint!.fs, digest: fingerprint!.digest, sealedAt: new Date().toISOString() },
      }));
      sealed.push({ snapshot: label.snapshot.name, cow: cow.path ?? `${cow.major}:${cow.minor}`, state: label.state });
      if (label.rollbackAtBoot) rollbackAtBoot = label.snapshot.name;
      await after('seal-label');
    }
    const dropped: string[] = [];
    for (const snap of group.snaps) {
      await dm.remove(snap.name, { retry: true });
      if (!sealed.some((s) => s.snapshot === snap.name)) dropped.push(snap.name);
      await after('remove-snapshot');
    }
    // Sealed labels stay; the others (COW files, a failed seal) are cleared.
    await removeUnusedCowMappings(dm, await currentGroup(dm, origin.originId));
    for (const snap of group.snaps) await releaseCowFile(system, origin.lockOptions, origin.originId, snap.tag.snapId!, false);
    await dm.remove(origin.realName, { retry: true });
    await after('remove-real');
    return { origin: origin.name, fs: fingerprint?.fs ?? null, sealed, dropped, rollbackAtBoot };
  } finally {
    lock();
  }
}

/** EBUSY unless NAME and every snapshot are closed (unmounted). */
async function assertUnused(dm: DeviceMapper, name: string, snaps: readonly TaggedDevice[]): Promise<void> {
  for (const device of [name, ...snaps.map((s) => s.name)]) {
    const info = await dm.find(device);
    if (info && info.openCount > 0) {
      throw new DmsnapError(`${device} is mounted or open (open count ${info.openCount}); unmount it before detaching ${name}`, 'EBUSY');
    }
  }
}

/** Removes NAME: from here on, nothing writes the origin through dmsnap. */
async function removeOrigin(dm: DeviceMapper, name: string): Promise<void> {
  try {
    await dm.remove(name, { retry: false });
  } catch (error) {
    if (error instanceof DmError && error.code === 'EBUSY') {
      throw new DmsnapError(`${name} is mounted or open; unmount it before detaching it`, 'EBUSY', { cause: error });
    }
    throw error;
  }
}

/** The fingerprint of what NAME-real holds, read past the page cache. */
export async function originFingerprint(origin: { dm: DeviceMapper; realName: string }): Promise<OriginFingerprint | undefined> {
  const device = await System.of(origin.dm).openBlockDevice(origin.dm.devicePath(origin.realName), { exclusive: false, writable: false });
  try {
    const { sizeBytes } = await device.info();
    return await fingerprintOrigin((offset, length) => device.read(offset, length, { direct: true }), sizeBytes);
  } finally {
    device.close();
  }
}
