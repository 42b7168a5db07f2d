/**
 * Planning a snapshot: everything checked before anything is written. The origin's state
 * must hold its invariants, the kernel must have the snapshot targets, the name must be
 * free, and the COW — opened once, exclusively and for writing — must be a writable
 * device outside the origin's stack, large enough, and hold no data.
 */
import type { DeviceInfo, DeviceMapper } from '../dm/device-mapper';
import { DmsnapError } from '../errors';
import type { HeldBlockDevice } from '../system/held-device';
import type { BlockDeviceInfo } from '../system/block-device';
import { deviceStack, devKey, loopBackingFilesystems, type DevNumber } from '../system/stack';
import { System } from '../system/system';
import { dataOffsetSectors } from '../targets/cow-label';
import { SECTOR_BYTES, sectors } from '../units';
import { checkOpenCow, explainOpenFailure, openCow, readOnlyCow } from './cow-device';
import { assertConsistent, BENIGN_FOR_LIFECYCLE, currentGroup } from './invariants';

/** The header chunk, a metadata chunk and room for data: the smallest useful persistent COW. */
const MIN_COW_CHUNKS = 4;

/** What planning needs to know of the origin. */
export interface PlannedOrigin {
  readonly dm: DeviceMapper;
  readonly name: string;
  readonly realName: string;
  readonly originId: string;
  readonly backing: DevNumber;
}

/** What a snapshot asks for. */
export interface SnapshotRequest {
  cow: string;
  name: string;
  chunkSectors: number;
  forceWipe: boolean;
  /** A persistent snapshot: the COW also holds dmsnap's label before the exception store. */
  persistent: boolean;
}

/** A checked snapshot, ready to be taken. */
export interface SnapshotPlan {
  cow: BlockDeviceInfo;
  /** The COW, held open from its checks until it is zeroed; the caller closes it. */
  device: HeldBlockDevice;
  wrapper: DeviceInfo;
  real: DeviceInfo;
  chunkBytes: number;
  /** The origin still has its linear table: this snapshot swaps in snapshot-origin. */
  firstSnapshot: boolean;
}

/** Clients whose kernel was seen to have the snapshot targets. */
const targetsSeen = new WeakSet<DeviceMapper>();

/**
 * Checks a snapshot of `origin` (under its lock). The COW is opened once `guardianSpawned`
 * resolves: a child being spawned copies the descriptors open at that instant. A guardian
 * that cannot start fails the plan, before anything is written.
 */
export async function planSnapshot(origin: PlannedOrigin, request: SnapshotRequest, guardianSpawned: Promise<void>): Promise<SnapshotPlan> {
  const { dm } = origin;
  const { cow } = request;
  // Zeroing the COW's first chunk is the only write dmsnap makes to a user's device, so a
  // filesystem, RAID member, LUKS header or partition table on it is refused. The checks
  // read the COW through the one descriptor the zeroing writes through.
  const opening = guardianSpawned.then(() => openCow(System.of(dm), cow));
  const blank = opening.then((opened) => checkOpenCow(opened, request.forceWipe));
  blank.catch(() => undefined);
  try {
    const { wrapper, real, firstSnapshot } = await checkOrigin(origin, request.name);
    // The origin's own devices first: busy as they are, they are refused as the origin's.
    const own = new Set([wrapper, real, origin.backing].map(devKey));
    const { info } = await opening.catch(async (error: unknown) => {
      throw await explainOpenFailure(System.of(dm), cow, error, (key) => (own.has(key) ? cowInOrigin(origin, cow) : undefined));
    });
    if (info.readOnly) throw readOnlyCow(cow);
    const stack = deviceStack([wrapper, real, origin.backing]);
    if (own.has(devKey(info)) || stack.has(devKey(info))) throw cowInOrigin(origin, cow);
    const chunkBytes = checkCowGeometry(info, request.chunkSectors, request.persistent);
    // A loop device over a file on the origin's own filesystem: copy-on-write would write
    // through the filesystem being snapshotted (and, during the freeze, wait on it).
    if (loopBackingFilesystems(info).some((key) => stack.has(key))) {
      throw new DmsnapError(
        `the COW device ${cow} is a loop device whose backing file lives on the filesystem of ${origin.name}; ` +
          'put the COW on another filesystem or device',
        'ERR_DMSNAP_COW_IN_ORIGIN',
      );
    }
    await blank;
    const { device } = await opening;
    return { cow: info, device, wrapper, real, chunkBytes, firstSnapshot };
  } catch (error) {
    // Released however far the checks got, now or once the open completes.
    opening.then((opened) => opened.device.close(), () => undefined);
    throw error;
  }
}

/** The origin's side: consistent, snapshot targets loaded, the snapshot's name free. */
async function checkOrigin(origin: PlannedOrigin, name: string): Promise<{ wrapper: DeviceInfo; real: DeviceInfo; firstSnapshot: boolean }> {
  const { dm } = origin;
  // Never build on what an interrupted call left behind (a table waiting in the origin's
  // inactive slot would be swapped in by this snapshot's resume).
  const [wrapper] = await Promise.all([
    dm.info(origin.name),
    currentGroup(dm, origin.originId).then((group) => assertConsistent(dm, origin.name, group, BENIGN_FOR_LIFECYCLE)),
  ]);
  // Independent questions to the kernel, asked at once.
  const [real, targets, existing, [wrapperLine]] = await Promise.all([
    dm.info(origin.realName),
    snapshotTargetsLoaded(dm),
    dm.find(name),
    dm.table(origin.name),
  ]);
  if (!targets) {
    throw new DmsnapError(
      'the kernel has no device-mapper snapshot target loaded; run "modprobe dm-snapshot" as root, then try again',
      'ERR_DMSNAP_NO_SNAPSHOT_TARGET',
    );
  }
  if (existing) {
    throw new DmsnapError(`a device-mapper device named "${name}" already exists; choose another snapshot name`, 'EEXIST');
  }
  return { wrapper, real, firstSnapshot: wrapperLine?.type !== 'snapshot-origin' };
}

/** Large enough for label, header, metadata and data, and sector-aligned chunks; the chunk size in bytes. */
function checkCowGeometry(info: BlockDeviceInfo, chunkSectors: number, persistent: boolean): number {
  const label = persistent ? dataOffsetSectors(sectors(chunkSectors)) : 0;
  const minimum = label + chunkSectors * MIN_COW_CHUNKS;
  if (info.sizeSectors < minimum) {
    throw new DmsnapError(
      `the COW device ${info.path} has ${info.sizeSectors} sectors; with ${chunkSectors}-sector chunks it needs at least ${minimum} (${persistent ? "dmsnap's label, " : ''}header, metadata and data)`,
      'ERR_DMSNAP_COW_TOO_SMALL',
    );
  }
  const chunkBytes = chunkSectors * SECTOR_BYTES;
  if (chunkBytes % info.logicalSectorSize !== 0) {
    throw new DmsnapError(
      `a ${chunkBytes}-byte chunk is not a multiple of ${info.path}'s ${info.logicalSectorSize}-byte sectors; choose a larger chunk`,
      'ERR_INVALID_ARG_VALUE',
    );
  }
  return chunkBytes;
}

function cowInOrigin(origin: PlannedOrigin, cow: string): DmsnapError {
  return new DmsnapError(
    `${cow} is the origin ${origin.name} or shares blocks with it (it is in its device stack); ` +
      'the COW must be a separate device, or the snapshot would overwrite what it copies',
    'ERR_DMSNAP_COW_IN_ORIGIN',
  );
}

/** Whether the kernel has the snapshot targets (remembered once seen: they stay). */
async function snapshotTargetsLoaded(dm: DeviceMapper): Promise<boolean> {
  if (targetsSeen.has(dm)) return true;
  const names = new Set((await dm.targets()).map((t) => t.name));
  const loaded = names.has('snapshot') && names.has('snapshot-origin');
  if (loaded) targetsSeen.add(dm);
  return loaded;
}
