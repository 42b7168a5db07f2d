/**
 * The snapshot lifecycle: prepare an origin (step 0), take snapshots of it (step 1),
 * read their status (step 4), drop them (step 5) and release the origin. Each call is a
 * transaction under the origin's lock, and the origin is never left suspended.
 */
import { basename } from 'node:path';
import { blockDeviceInfo, type BlockDeviceInfo } from '../block-device';
import type { DeviceInfo, DeviceMapper } from '../dm/device-mapper';
import { checkDeviceName } from '../dm/names';
import { UdevFlags } from '../dm/udev';
import { DmError, DmsnapError, SyscallError } from '../errors';
import { callNative, guardianExecutable, type NativeBlockDevice } from '../native';
import { linear } from '../targets/linear';
import { parseLinearParams } from '../targets/linear';
import { MAX_CHUNK_SECTORS, MIN_CHUNK_SECTORS, snapshot as snapshotTarget } from '../targets/snapshot';
import { snapshotOrigin } from '../targets/snapshot-origin';
import { sectors, SECTOR_BYTES } from '../units';
import { check, checkPath } from '../validate';
import { clientOf, type LifecycleOptions } from './context';
import { checkOpenCow, explainOpenFailure, openCow, readOnlyCow } from './cow-device';
import { scanGroups, type OriginGroup } from './discover';
import { assertConsistent, currentGroup, type ViolationKind } from './invariants';
import { lockOrigin, type OriginLock } from './lock';
import { Snapshot, snapshotInfoFromTable, type SnapshotOwner, type SnapshotStatusReport } from './snapshot';
import { deviceStack, devicePathOf, devKey, holdersOf, loopBackingFilesystems, type DevNumber } from './stack';
import { environmentFreezeSeam, environmentStepHook, type Step, type StepHook } from './steps';
import { formatTag, newOriginId, newSnapId, parseTag } from './tags';

/** udev must not probe the private layers: they hold the same filesystem as the origin. */
const HIDDEN_LAYER = UdevFlags.disableDiskRules | UdevFlags.disableOtherRules | UdevFlags.disableSubsystemRules;

/** The header chunk, a metadata chunk and room for data: the smallest useful persistent COW. */
const MIN_COW_CHUNKS = 4;

/** Options of prepare. */
export interface PrepareOptions extends LifecycleOptions {
  /** The wrapper's name (/dev/mapper/NAME). Default: the device's base name (md2 for /dev/md2). */
  name?: string;
}

/** Options of Origin.snapshot and withSnapshot. */
export interface SnapshotOptions {
  /** The block device that receives the origin's old blocks. Its first chunk is zeroed. */
  cow: string;
  /** Chunk size in 512-byte sectors: a power of two from 8 to 2^21. Default 32 (16 KiB). */
  chunkSectors?: number;
  /** Persistent snapshot (P, survives reactivation) or transient (N). Default true. */
  persistent?: boolean;
  /** Name of the snapshot device. Default NAME-snap. */
  name?: string;
  /** Overwrite a COW device that carries a filesystem or other signature. Default false. */
  forceWipe?: boolean;
  /** @internal Test hook called after each step. */
  onStep?: StepHook;
}

/** What Origin.status reports: the origin, and each snapshot with its COW usage. */
export interface OriginStatus {
  name: string;
  /** /dev/mapper/NAME, where the filesystem is mounted. */
  device: string;
  /** The block device under the origin (null if sysfs does not name it). */
  backing: string | null;
  /** The origin's size in bytes. */
  sizeBytes: number;
  /** Normally false; true if the origin was left suspended (see recover). */
  suspended: boolean;
  /**
   * Each snapshot's status, with its COW device (a path, or MAJOR:MINOR), chunk size in
   * 512-byte sectors and persistence.
   */
  snapshots: (SnapshotStatusReport & { cow: string; chunkSectors: number; persistent: boolean })[];
}

/** A device prepared by dmsnap: NAME (the wrapper the filesystem lives on) and NAME-real. */
export class Origin implements SnapshotOwner {
  /** @internal */
  constructor(
    private readonly dm: DeviceMapper,
    private readonly options: LifecycleOptions,
    readonly name: string,
    /** The id in the uuid tags of its devices (DMSNAP-<originId>-…). */
    readonly originId: string,
    /** The block device under the origin. */
    readonly backing: DevNumber & { path: string | null },
    /** Size in 512-byte sectors. */
    readonly sizeSectors: number,
  ) {}

  /** /dev/mapper/NAME: mount this, not the backing device. */
  get devicePath(): string {
    return this.dm.devicePath(this.name);
  }

  /** The uuid of NAME: DMSNAP-<originId>-origin. */
  get originUuid(): string {
    return formatTag({ originId: this.originId, role: 'origin' });
  }

  /** The name of NAME-real, the linear mapping of the backing device that snapshots read from. */
  get realName(): string {
    return `${this.name}-real`;
  }

  /** Size in bytes. */
  get sizeBytes(): number {
    return this.sizeSectors * SECTOR_BYTES;
  }

  /** The snapshots of this origin that exist now, read from the kernel. */
  async snapshots(): Promise<Snapshot[]> {
    const group = (await scanGroups(this.dm)).get(this.originId);
    const result: Snapshot[] = [];
    for (const device of group?.snaps ?? []) {
      const [line] = await this.dm.table(device.name);
      if (!line || (line.type !== 'snapshot' && line.type !== 'snapshot-merge')) continue;
      result.push(new Snapshot(this.dm, this, snapshotInfoFromTable(device.name, this.name, line.type, line.params)));
    }
    return result.sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** The origin and each of its snapshots, with usage. */
  async status(): Promise<OriginStatus> {
    const info = await this.dm.info(this.name);
    const snapshots = [];
    for (const snap of await this.snapshots()) {
      const report = await snap.status();
      snapshots.push({
        ...report,
        cow: snap.info.cow.path ?? `${snap.info.cow.major}:${snap.info.cow.minor}`,
        chunkSectors: snap.info.chunkSectors,
        persistent: snap.info.persistent,
      });
    }
    return { name: this.name, device: this.devicePath, backing: this.backing.path, sizeBytes: this.sizeBytes, suspended: info.suspended, snapshots };
  }

  /**
   * Takes a snapshot (step 1). Everything that can be done before the freeze is: checks,
   * zeroing the COW header, creating the snapshot device and loading both new tables.
   * The freeze is three ioctls: suspend the origin (flushing and freezing its
   * filesystem), resume the snapshot, resume the origin with `snapshot-origin`. If any
   * step fails, the origin is resumed with its previous table, the devices this call
   * created are removed, and the error names the step.
   */
  async snapshot(options: SnapshotOptions): Promise<Snapshot> {
    check(typeof options === 'object' && options !== null, 'options', 'an object with at least { cow }', options);
    checkPath(options.cow, 'cow');
    const chunkSectors = options.chunkSectors ?? 32;
    check(
      Number.isSafeInteger(chunkSectors) && chunkSectors >= MIN_CHUNK_SECTORS && chunkSectors <= MAX_CHUNK_SECTORS && (chunkSectors & (chunkSectors - 1)) === 0,
      'chunkSectors',
      `a power of two from ${MIN_CHUNK_SECTORS} to ${MAX_CHUNK_SECTORS}`,
      chunkSectors,
    );
    const persistent = options.persistent ?? true;
    check(typeof persistent === 'boolean', 'persistent', 'a boolean', persistent);
    const name = options.name ?? `${this.name}-snap`;
    checkDeviceName(name, 'name');
    const after = stepRunner(options.onStep);

    const release = await lockOrigin(this.dm.nativeBinding, this.name, this.options);
    // The guardian starts now and gets ready while the checks and the preparation run:
    // it must be there before the freeze, and costs nothing inside it.
    const guardian = startGuardian(this.dm, this.originUuid, release);
    let plan: SnapshotPlan | undefined;
    try {
      plan = await this.checkSnapshot(options.cow, name, chunkSectors, options.forceWipe === true, guardian.spawned);
      await after('validate');
      return await this.takeSnapshot(plan, name, chunkSectors, persistent, after, guardian.ready);
    } finally {
      plan?.device.close();
      const finished = finishGuardian(this.dm, guardian.ready);
      release();
      await finished;
    }
  }

  /** Drops every snapshot of this origin, then removes NAME and NAME-real. EBUSY while mounted. */
  async release(): Promise<void> {
    const release = await lockOrigin(this.dm.nativeBinding, this.name, this.options);
    try {
      const snaps = await this.snapshots();
      if (snaps.length > 0) {
        throw new DmsnapError(
          `${this.name} still has ${snaps.length} snapshot(s) (${snaps.map((s) => s.name).join(', ')}); drop them first`,
          'ERR_DMSNAP_HAS_SNAPSHOTS',
        );
      }
      try {
        await this.dm.remove(this.name, { retry: false });
      } catch (error) {
        if (error instanceof DmError && error.code === 'EBUSY') {
          throw new DmsnapError(
            `${this.devicePath} is mounted or in use; unmount it before releasing ${this.name}`,
            'EBUSY',
            { cause: error },
          );
        }
        throw error;
      }
      await this.dm.remove(this.realName);
    } finally {
      release();
    }
  }

  /**
   * @internal Drops one snapshot; restores the linear table when it was the last. The
   * snapshot is removed while the origin runs (the kernel unhooks it from the origin's
   * writes), so the origin is suspended only for the swap back to linear, never while a
   * remove is retried or udev is awaited.
   */
  async dropSnapshot(snap: Snapshot, onStep?: StepHook): Promise<void> {
    const after = stepRunner(onStep);
    const { dm } = this;
    const release = await lockOrigin(dm.nativeBinding, this.name, this.options);
    let guardian: Promise<Guardian> | undefined;
    try {
      const group = await currentGroup(dm, this.originId);
      await assertConsistent(dm, this.name, group, BENIGN_FOR_LIFECYCLE);
      // Found by its tag, not by name alone: a device of that name from elsewhere is never touched.
      const target = group.snaps.find((s) => s.name === snap.name);
      const last = group.snaps.every((s) => s.name === snap.name);
      if (last) guardian = startGuardian(dm, this.originUuid, release).ready;
      if (target) {
        const info = await dm.find(snap.name);
        if (info && info.openCount > 0) {
          throw new DmsnapError(
            `snapshot ${snap.name} is mounted or open (open count ${info.openCount}); unmount it or close it first`,
            'EBUSY',
          );
        }
        try {
          await dm.remove(snap.name, { retry: true });
        } catch (error) {
          if (error instanceof DmError && error.code === 'EBUSY') {
            throw new DmsnapError(`snapshot ${snap.name} is mounted or open; unmount it or close it first`, 'EBUSY', { cause: error });
          }
          throw error;
        }
        await after('remove-snapshot');
      }
      const [wrapperLine] = await dm.table(this.name);
      if (last && wrapperLine?.type === 'snapshot-origin') await this.restoreLinear(guardian!, after);
    } finally {
      const finished = guardian ? finishGuardian(dm, guardian) : Promise.resolve();
      release();
      await finished;
    }
  }

  /** Swaps the origin back to the linear table of NAME-real (no snapshot is left to feed). */
  private async restoreLinear(guardian: Promise<Guardian>, after: (step: Step) => Promise<void>): Promise<void> {
    const { dm } = this;
    let loaded = false;
    let suspended = false;
    try {
      await dm.load(this.name, await dm.table(this.realName));
      loaded = true;
      await after('load-linear-table');
      await guardian;
      // The filesystem need not be frozen to drop a snapshot: suspend without lockfs.
      await dm.suspend(this.name, { skipLockfs: true });
      suspended = true;
      await after('suspend-origin');
      await dm.resume(this.name);
      suspended = false;
    } catch (error) {
      // Back to where it was: the old table live, nothing waiting in the inactive slot.
      if (loaded) await dm.clear(this.name).catch(() => undefined);
      if (suspended) await dm.resume(this.name).catch(() => undefined);
      throw error;
    }
    await after('resume-origin');
  }

  private async checkSnapshot(
    cow: string,
    name: string,
    chunkSectors: number,
    forceWipe: boolean,
    guardianSpawned: Promise<void>,
  ): Promise<SnapshotPlan> {
    const { dm } = this;
    // The COW is opened once, exclusively (not mounted, not held by md, device-mapper or
    // another program) and for writing, and checked to hold no data through that one
    // descriptor: zeroing its first chunk is the only write dmsnap makes to a user's
    // device, so a filesystem, RAID member, LUKS header or partition table on it is
    // refused. The open waits for the guardian's spawn: a child being spawned copies the
    // descriptors open at that instant. A guardian that cannot start fails the call here.
    const opening = guardianSpawned.then(() => openCow(dm.nativeBinding, cow));
    const blank = opening.then((opened) => checkOpenCow(opened, forceWipe));
    blank.catch(() => undefined);
    try {
      // Never build on what an interrupted call left behind (a table waiting in the origin's
      // inactive slot would be swapped in by this snapshot's resume).
      const [wrapper] = await Promise.all([
        dm.info(this.name),
        currentGroup(dm, this.originId).then((group) => assertConsistent(dm, this.name, group, BENIGN_FOR_LIFECYCLE)),
      ]);
      // Independent questions to the kernel, asked at once.
      const [real, targets, existing, [wrapperLine]] = await Promise.all([
        dm.info(this.realName),
        this.snapshotTargetsLoaded(),
        dm.find(name),
        dm.table(this.name),
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
      // The origin's own devices first: busy as they are, they are refused as the origin's.
      const own = new Set([wrapper, real, this.backing].map(devKey));
      const { info: cowInfo } = await opening.catch(async (error: unknown) => {
        throw await explainOpenFailure(dm.nativeBinding, cow, error, (key) => (own.has(key) ? this.cowInOrigin(cow) : undefined));
      });
      if (cowInfo.readOnly) throw readOnlyCow(cow);
      const stack = deviceStack([wrapper, real, this.backing]);
      if (own.has(devKey(cowInfo)) || stack.has(devKey(cowInfo))) throw this.cowInOrigin(cow);
      const minimum = chunkSectors * MIN_COW_CHUNKS;
      if (cowInfo.sizeSectors < minimum) {
        throw new DmsnapError(
          `the COW device ${cow} has ${cowInfo.sizeSectors} sectors; with ${chunkSectors}-sector chunks it needs at least ${minimum} (header, metadata and data)`,
          'ERR_DMSNAP_COW_TOO_SMALL',
        );
      }
      const chunkBytes = chunkSectors * SECTOR_BYTES;
      if (chunkBytes % cowInfo.logicalSectorSize !== 0) {
        throw new DmsnapError(`a ${chunkBytes}-byte chunk is not a multiple of ${cow}'s ${cowInfo.logicalSectorSize}-byte sectors; choose a larger chunk`, 'ERR_INVALID_ARG_VALUE');
      }
      // A loop device over a file on the origin's own filesystem: copy-on-write would write
      // through the filesystem being snapshotted (and, during the freeze, wait on it).
      if (loopBackingFilesystems(cowInfo).some((key) => stack.has(key))) {
        throw new DmsnapError(
          `the COW device ${cow} is a loop device whose backing file lives on the filesystem of ${this.name}; ` +
            'put the COW on another filesystem or device',
          'ERR_DMSNAP_COW_IN_ORIGIN',
        );
      }
      await blank;
      const { device } = await opening;
      return { cow: cowInfo, device, wrapper, real, chunkBytes, firstSnapshot: wrapperLine?.type !== 'snapshot-origin' };
    } catch (error) {
      // Released however far the checks got, now or once the open completes.
      opening.then((opened) => opened.device.close(), () => undefined);
      throw error;
    }
  }

  private cowInOrigin(cow: string): DmsnapError {
    return new DmsnapError(
      `${cow} is the origin ${this.name} or shares blocks with it (it is in its device stack); ` +
        'the COW must be a separate device, or the snapshot would overwrite what it copies',
      'ERR_DMSNAP_COW_IN_ORIGIN',
    );
  }

  /** Whether the kernel has the snapshot targets (remembered once seen: they stay). */
  private async snapshotTargetsLoaded(): Promise<boolean> {
    if (targetsSeen.has(this.dm)) return true;
    const names = new Set((await this.dm.targets()).map((t) => t.name));
    const loaded = names.has('snapshot') && names.has('snapshot-origin');
    if (loaded) targetsSeen.add(this.dm);
    return loaded;
  }

  private async takeSnapshot(
    plan: SnapshotPlan,
    name: string,
    chunkSectors: number,
    persistent: boolean,
    after: (step: Step) => Promise<void>,
    guardianStarting: Promise<Guardian>,
  ): Promise<Snapshot> {
    const { dm } = this;
    const size = sectors(this.sizeSectors);
    const realKey = devKey(plan.real);
    const cowKey = devKey(plan.cow);
    let step: Step = 'validate';
    let created = false;
    let preloaded = false;
    let freezeMs: number | undefined;
    const { firstSnapshot } = plan;
    try {
      step = 'zero-cow';
      // A stale header would revive an old (or invalid) snapshot: zero the first chunk.
      await callNative(() => plan.device.zeroStart(plan.chunkBytes));
      // Released before the table load: the snapshot's own claim on the COW is exclusive too.
      plan.device.close();
      await after(step);

      step = 'create-snapshot-device';
      await dm.create(name, { uuid: formatTag({ originId: this.originId, role: 'snap', snapId: newSnapId() }) });
      created = true;
      await after(step);

      // Both tables go into inactive slots at once; neither changes anything yet.
      step = 'load-snapshot-table';
      const snapshotTable = [snapshotTarget({ length: size, origin: realKey, cow: cowKey, persistent, chunkSectors: sectors(chunkSectors) })];
      const originLoad = firstSnapshot ? dm.load(this.name, [snapshotOrigin({ length: size, origin: realKey })]) : undefined;
      originLoad?.catch(() => undefined);
      try {
        const loaded = await dm.load(name, snapshotTable);
        assertSoleUser(plan.cow, loaded);
      } finally {
        // Whatever happened to the snapshot table, know the state of the origin's slot.
        if (originLoad) preloaded = await originLoad.then(() => true, () => false);
      }
      await after(step);
      if (firstSnapshot) {
        step = 'load-origin-table';
        await originLoad;
        await after(step);
      }

      // If this process dies while the origin is suspended, the guardian resumes it.
      await guardianStarting;
      // The freeze: one native call on a thread of its own with memory locked (see
      // lib/dm/freeze.ts), so that nothing in it waits for the thread pool, udev or
      // JavaScript. If a step fails, it resumes the origin with its previous table itself.
      const batch = dm.udevBatch();
      try {
        step = 'suspend-origin';
        const seam = environmentFreezeSeam();
        const frozen = await dm.freeze(this.name, name, { batch, snapshotUdevFlags: HIDDEN_LAYER, originTableLoaded: preloaded, ...(seam ? { seam } : {}) });
        preloaded = false;
        freezeMs = frozen.freezeMs;
      } catch (error) {
        // The step the native freeze failed at, and whether it dropped the new table.
        const { freezeStep, recovery } = error as { freezeStep?: Step; recovery?: { cleared: boolean } };
        if (freezeStep) step = freezeStep;
        if (recovery?.cleared) preloaded = false;
        throw error;
      } finally {
        await batch.finish();
      }
      // Reported once the freeze is over: no JavaScript runs while the origin is suspended.
      for (const done of ['suspend-origin', 'resume-snapshot', 'resume-origin'] as const) {
        step = done;
        await after(step);
      }
      const info = { name, originName: this.name, origin: { major: plan.real.major, minor: plan.real.minor }, cow: { major: plan.cow.major, minor: plan.cow.minor, path: plan.cow.path }, chunkSectors, persistent, targetType: 'snapshot' };
      return new Snapshot(dm, this, info, freezeMs);
    } catch (error) {
      await this.rollBack(name, created, preloaded);
      const reason = error instanceof Error ? error.message : String(error);
      const code = error instanceof DmsnapError ? error.code : 'ERR_DMSNAP_SNAPSHOT_FAILED';
      throw new DmsnapError(
        `snapshot "${name}" of ${this.name} failed at step "${step}": ${reason}. ` +
          `${this.name} is running with its previous table and the devices this call created were removed`,
        code,
        { cause: error },
      );
    }
  }

  /** Undoes a failed snapshot: inactive table cleared, origin live, snapshot device gone. */
  private async rollBack(name: string, created: boolean, preloaded: boolean): Promise<void> {
    const { dm } = this;
    if (preloaded) await dm.clear(this.name).catch(() => undefined);
    const wrapper = await dm.find(this.name);
    if (wrapper?.suspended) await dm.resume(this.name).catch(() => undefined);
    if (created) await dm.remove(name, { retry: true }).catch(() => undefined);
    // A swap that went through but failed afterwards leaves snapshot-origin with no
    // snapshot: put the linear table back.
    const [line] = await dm.table(this.name).catch(() => []);
    if (line?.type === 'snapshot-origin' && (await this.snapshots()).length === 0) {
      await dm.load(this.name, await dm.table(this.realName)).catch(() => undefined);
      await dm.resume(this.name, { skipLockfs: true }).catch(() => undefined);
    }
  }
}

/**
 * Snapshot-origin with no snapshot left (a drop interrupted after its remove) is harmless to
 * build on: a new snapshot is fed by it, and the next drop restores the linear table.
 */
const BENIGN_FOR_LIFECYCLE: ReadonlySet<ViolationKind> = new Set(['origin-without-snapshots']);

/**
 * The exclusive open before the zeroing cannot see another snapshot being made on the same
 * COW at the same moment: device-mapper tables share one claim on the devices they use. Once
 * the table is loaded, the COW's holders are the proof: this snapshot must be the only one.
 */
function assertSoleUser(cow: BlockDeviceInfo, snapshotDevice: DevNumber): void {
  const others = holdersOf(cow).filter((key) => key !== devKey(snapshotDevice));
  if (others.length > 0) {
    throw new DmsnapError(
      `the COW device ${cow.path} is also used by device ${others.join(', ')} (another snapshot made at the same time?); name an unused device`,
      'EBUSY',
    );
  }
}

/** Runs the test hooks (the caller's and the environment's) after each step. */
function stepRunner(onStep: StepHook | undefined): (step: Step) => Promise<void> {
  const hooks = [onStep, environmentStepHook()].filter((h): h is StepHook => h !== undefined);
  return async (step) => {
    for (const hook of hooks) await hook(step);
  };
}

/** How long the guardian may take to start and open the control node. */
const GUARDIAN_START_TIMEOUT_MS = 10_000;

interface Guardian {
  pid: number;
  fd: number;
}

/** Clients whose kernel was seen to have the snapshot targets. */
const targetsSeen = new WeakSet<DeviceMapper>();

/** A guardian on its way: spawned (the child exists), then ready (it watches this process). */
interface GuardianStart {
  spawned: Promise<void>;
  ready: Promise<Guardian>;
}

/** Starts the guardian of `originName`, which takes `lock` (the same file, by DEV:INO) before it acts. */
/** Starts the guardian of the origin whose uuid is `originUuid` (it acts by uuid, never by name). */
function startGuardian(dm: DeviceMapper, originUuid: string, lock: OriginLock): GuardianStart {
  const binding = dm.nativeBinding;
  const executable = guardianExecutable();
  const failed = (error: unknown): never => {
    throw new DmsnapError(
      `cannot start dmsnap-guardian, which resumes the origin should dmsnap die while it is suspended: ${(error as Error).message}. ` +
        'Rebuild dmsnap (npm rebuild dmsnap) so that build/Release/dmsnap-guardian exists',
      'ERR_DMSNAP_GUARDIAN',
      { cause: error },
    );
  };
  const spawning = callNative(() => binding.spawnGuardian(executable, dm.controlPath, originUuid, lock.path, lock.id));
  const spawned = spawning.then(() => undefined, failed);
  const ready = spawning.then(async (guardian) => {
    await callNative(() => binding.awaitGuardianReady(guardian.pid, guardian.fd, executable, GUARDIAN_START_TIMEOUT_MS)).catch(failed);
    return guardian;
  }, failed);
  // Looked at later, or not at all when the call fails first: never unhandled meanwhile.
  spawned.catch(() => undefined);
  ready.catch(() => undefined);
  return { spawned, ready };
}

/**
 * Tells the guardian that the freeze is over and collects its exit. Awaited, so that when a
 * lifecycle call returns, dmsnap holds no descriptor and no child process for it. Never throws.
 */
function finishGuardian(dm: DeviceMapper, guardian: Promise<Guardian>): Promise<void> {
  return guardian.then(
    (g) =>
      callNative(() => dm.nativeBinding.finishGuardian(g.pid, g.fd, true)).then(
        () => undefined,
        () => undefined,
      ),
    () => undefined,
  );
}

interface SnapshotPlan {
  cow: BlockDeviceInfo;
  /** The COW, held open from its checks until it is zeroed. */
  device: NativeBlockDevice;
  wrapper: DeviceInfo;
  real: DeviceInfo;
  chunkBytes: number;
  /** The origin still has its linear table: this snapshot swaps in snapshot-origin. */
  firstSnapshot: boolean;
}

/** Builds an Origin from its kernel devices; undefined when the group is incomplete. */
async function originFromGroup(dm: DeviceMapper, options: LifecycleOptions, group: OriginGroup): Promise<Origin | undefined> {
  if (!group.origin || !group.real) return undefined;
  const [line] = await dm.table(group.real.name);
  if (!line || line.type !== 'linear') return undefined;
  const params = parseLinearParams(line.params);
  const [major, minor] = params.device.split(':').map(Number);
  const backing = { major, minor, path: devicePathOf({ major, minor }) ?? null };
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
  const release = await lockOrigin(dm.nativeBinding, name, options);
  try {
    const disk = await blockDeviceInfo(device, { binding: dm.nativeBinding });
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
    try {
      await callNative(() => dm.nativeBinding.checkExclusive(device));
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
    const originId = newOriginId();
    const table = [linear({ length: disk.sizeSectors, device: devKey(disk) })];
    await dm.create(`${name}-real`, { uuid: formatTag({ originId, role: 'real' }), table, udevFlags: HIDDEN_LAYER });
    try {
      await dm.create(name, { uuid: formatTag({ originId, role: 'origin' }), table });
    } catch (error) {
      await dm.remove(`${name}-real`).catch(() => undefined);
      throw error;
    }
    return new Origin(dm, options, name, originId, { major: disk.major, minor: disk.minor, path: device }, disk.sizeSectors);
  } finally {
    release();
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
