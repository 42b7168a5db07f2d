/**
 * Origins from the kernel: prepare one (step 0), open one by name, list them all, release
 * one; and withSnapshot. dmsnap keeps no state files: an origin is its tagged devices.
 */
import { basename } from 'node:path';
import type { DeviceMapper } from '../dm/device-mapper';
import { checkDeviceName } from '../dm/names';
import { DmsnapError, SyscallError } from '../errors';
import { devicePathOf, devKey } from '../system/stack';
import { System } from '../system/system';
import { linear, parseLinearParams } from '../targets/linear';
import { checkPath } from '../validate';
import { clientOf, HIDDEN_LAYER, type LifecycleOptions } from './context';
import { scanGroups, type OriginGroup } from './discover';
import { Origin, type SnapshotOptions } from './origin';
import type { Snapshot } from './snapshot';
import { formatTag, newOriginId, parseTag } from './tags';
import { parseDevKey, type DevNumber } from '../dev-number';
import type { CowLabel } from '../targets/cow-label';
import { removeCowMapping, updateCowLabel } from './cow-mapping';
import { attachAccepted, attachFailed, checkAttach, type AttachResult } from './reattach';

/** Options of prepare. */
export interface PrepareOptions extends LifecycleOptions {
  /** The wrapper's name (/dev/mapper/NAME). Default: the device's base name (md2 for /dev/md2). */
  name?: string;
  /**
   * COW devices whose snapshots of this origin to bring back (see reattach.ts): each is
   * attached only if dmsnap detached the origin cleanly and it was not written since.
   * Ignored when the origin is prepared already.
   */
  attach?: readonly string[];
  /** Called for each COW in `attach`: attached, merging (a rollback resumed) or refused, and why. */
  onAttach?: (result: AttachResult) => void;
}

/** After a failed attach: the snapshots and mappings made removed (their labels sealed again), NAME-real too. */
async function undoAttach(dm: DeviceMapper, originId: string, name: string, accepted: readonly { info: DevNumber; label: CowLabel }[]): Promise<void> {
  const system = System.of(dm);
  for (const { info, label } of accepted) await updateCowLabel(system, info, (current) => ({ ...current, seal: label.seal })).catch(() => undefined);
  const group = (await scanGroups(dm)).get(originId);
  for (const snap of group?.snaps ?? []) await dm.remove(snap.name, { retry: true }).catch(() => undefined);
  for (const mapping of group?.cows ?? []) await removeCowMapping(dm, mapping).catch(() => undefined);
  await dm.remove(`${name}-real`, { retry: true }).catch(() => undefined);
}

/** EBUSY, with what to do, when the device is mounted or held: prepare runs before the mount. */
async function assertNotInUse(system: System, dm: DeviceMapper, device: string, name: string): Promise<void> {
  try {
    await system.checkExclusive(device);
  } catch (error) {
    if (error instanceof SyscallError && error.code === 'EBUSY') {
      throw new DmsnapError(
        `${device} is in use (mounted or held by another device): prepare must run before the filesystem is mounted. ` +
          `Unmount ${device}, run prepare, then mount ${dm.devicePath(name)} instead`,
        'EBUSY',
        { cause: error },
      );
    }
    throw error;
  }
}

/** Builds an Origin from its kernel devices; undefined when the group is incomplete. */
async function originFromGroup(dm: DeviceMapper, options: LifecycleOptions, group: OriginGroup): Promise<Origin | undefined> {
  if (!group.origin || !group.real) return undefined;
  const [line] = await dm.table(group.real.name);
  if (!line || line.type !== 'linear') return undefined;
  const params = parseLinearParams(line.params);
  const device = parseDevKey(params.device);
  if (!device) return undefined;
  const backing = { ...device, path: devicePathOf(device) ?? null };
  return new Origin(dm, options, group.origin.name, group.originId, backing, line.length);
}

/**
 * Step 0: wraps a block device in a linear device-mapper device NAME, plus the duplicate
 * NAME-real (the origin of future snapshots). Run it before mounting; then mount
 * /dev/mapper/NAME. Calling it again for the same device returns the same origin.
 */
export async function prepare(device: string, options: PrepareOptions = {}): Promise<Origin> {
  checkPath(device, 'device');
  const name = options.name ?? basename(device);
  checkDeviceName(name, 'name');
  checkDeviceName(`${name}-real`, 'name (with "-real" appended)');
  checkDeviceName(`${name}-snap`, 'name (with "-snap" appended)');
  const dm = await clientOf(options);
  const system = System.of(dm);
  const lock = await system.lock(name, options);
  try {
    const disk = await system.blockDevice(device);
    const existing = await dm.find(name);
    if (existing) {
      const origin = parseTag(existing.uuid)?.role === 'origin' ? await openOriginUnlocked(dm, options, name) : undefined;
      if (!origin) {
        throw new DmsnapError(`a device-mapper device named "${name}" exists and dmsnap did not create it; choose another name`, 'EEXIST');
      }
      if (origin.backing.major !== disk.major || origin.backing.minor !== disk.minor) {
        throw new DmsnapError(
          `${name} already wraps ${origin.backing.path ?? `${origin.backing.major}:${origin.backing.minor}`}, not ${device}; choose another name`,
          'EEXIST',
        );
      }
      return origin;
    }
    const owner = await dm.find({ major: disk.major, minor: disk.minor }).catch(() => undefined);
    if (owner && parseTag(owner.uuid)) {
      throw new DmsnapError(`${device} is itself a dmsnap device (${owner.name}); prepare the underlying block device`, 'ERR_INVALID_ARG_VALUE');
    }
    await assertNotInUse(system, dm, device, name);
    const { accepted, refused } = options.attach?.length ? await checkAttach(system, name, device, disk, options.attach) : { accepted: [], refused: [] };
    // The origin keeps its id across a detach: the snapshots come back under their tags.
    const originId = accepted[0]?.label.origin.id ?? newOriginId();
    const table = [linear({ length: disk.sizeSectors, device: devKey(disk) })];
    const real = await dm.create(`${name}-real`, { uuid: formatTag({ originId, role: 'real' }), table, udevFlags: HIDDEN_LAYER });
    let results: AttachResult[] = [];
    try {
      const attached = await attachAccepted(dm, originId, real, disk, accepted);
      results = attached.results;
      await dm.create(name, { uuid: formatTag({ originId, role: 'origin' }), table: attached.table ?? table });
    } catch (error) {
      await undoAttach(dm, originId, name, accepted);
      throw accepted.length > 0 ? attachFailed(name, error) : error;
    }
    for (const result of [...refused, ...results]) options.onAttach?.(result);
    return new Origin(dm, options, name, originId, { major: disk.major, minor: disk.minor, path: device }, disk.sizeSectors);
  } finally {
    lock();
  }
}

async function openOriginUnlocked(dm: DeviceMapper, options: LifecycleOptions, name: string): Promise<Origin | undefined> {
  const info = await dm.find(name);
  const tag = parseTag(info?.uuid);
  if (!info || tag?.role !== 'origin') return undefined;
  const group = (await scanGroups(dm)).get(tag.originId);
  return group ? originFromGroup(dm, options, group) : undefined;
}

/** The origin named NAME, rebuilt from the kernel. Fails if NAME is not a dmsnap origin. */
export async function openOrigin(name: string, options: LifecycleOptions = {}): Promise<Origin> {
  checkDeviceName(name, 'name');
  const dm = await clientOf(options);
  const origin = await openOriginUnlocked(dm, options, name);
  if (!origin) {
    const exists = await dm.find(name);
    throw new DmsnapError(
      exists
        ? `"${name}" is a device-mapper device that dmsnap did not prepare (or whose NAME-real is missing; try "dmsnap recover")`
        : `no origin named "${name}"; prepare one with "dmsnap prepare DEVICE --name ${name}"`,
      exists ? 'ERR_DMSNAP_NOT_AN_ORIGIN' : 'ENXIO',
    );
  }
  // The next call on an origin finishes a rollback whose merge is done (unless another
  // process holds the lock: then that one, or a later call, does).
  await origin.finishMerge().catch((error: unknown) => {
    if (!(error instanceof DmsnapError && error.code === 'ERR_DMSNAP_LOCKED')) throw error;
  });
  return origin;
}

/** Every origin dmsnap manages, rebuilt from the kernel (no state files). */
export async function listOrigins(options: LifecycleOptions = {}): Promise<Origin[]> {
  const dm = await clientOf(options);
  const origins: Origin[] = [];
  for (const group of (await scanGroups(dm)).values()) {
    const origin = await originFromGroup(dm, options, group);
    if (origin) origins.push(origin);
  }
  return origins.sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** Undoes prepare for NAME: fails while it has snapshots or is mounted. */
export async function release(name: string, options: LifecycleOptions = {}): Promise<void> {
  await (await openOrigin(name, options)).release();
}

/**
 * Takes a snapshot, runs `fn` with it, and drops it when `fn` returns or throws
 * (unmounting it first if `fn` mounted it with `snapshot.mount`).
 */
export async function withSnapshot<T>(origin: Origin, options: SnapshotOptions, fn: (snapshot: Snapshot) => Promise<T>): Promise<T> {
  const snap = await origin.snapshot(options);
  try {
    return await fn(snap);
  } finally {
    await snap.drop();
  }
}
