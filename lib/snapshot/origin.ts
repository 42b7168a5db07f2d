/**
 * An origin: a device prepared by dmsnap (NAME, the wrapper the filesystem lives on, and
 * NAME-real), its status, and the snapshot calls, each a transaction under the origin's
 * lock that never leaves the origin suspended. Planning, taking and dropping live in
 * plan.ts, take.ts and drop.ts; prepare, open and list in open.ts.
 */
import type { DeviceMapper } from '../dm/device-mapper';
import type { TargetLine } from '../dm/table';
import { DmError, DmsnapError } from '../errors';
import type { DevNumber } from '../system/stack';
import type { LockOptions, OriginLock } from '../system/lock';
import { System } from '../system/system';
import { sectorsToBytes, type Bytes, type Sectors } from '../units';
import { check } from '../validate';
import type { LifecycleOptions } from './context';
import { scanGroups } from './discover';
import { dropSnapshot } from './drop';
import { cowLabel, Snapshot, type DropOptions, type SnapshotOwner, type SnapshotStatusReport } from './snapshot';
import { snapshotInfoFromTable } from './snapshot-info';
import type { StepHook } from './steps';
import { snapshotGroup } from './group';
import type { FreezeHookOptions } from '../system/hooks';
import { formatTag } from './tags';
import { recordedCowFile, type CowFileOptions } from './cow-file';
import { mergeState, type MergeState } from './merge';
import { mappedCow } from './cow-mapping';
import { detachOrigin, type DetachOptions, type DetachReport } from './detach';
import { finishMergeLocked, rollBackTo, waitForMerge, type RollbackOptions } from './rollback';
import { cancelRollbackAtBoot, findScheduled, type RollbackAtBoot } from './rollback-at-boot';

/** Options of Origin.snapshot and withSnapshot. */
export interface SnapshotOptions {
  /** The block device that receives the origin's old blocks. Its first chunk is zeroed. Give this or cowFile. */
  cow?: string;
  /**
   * A file dmsnap creates for the origin's old blocks, served by a loop device of its own,
   * instead of a COW device; deleted when the snapshot is dropped.
   */
  cowFile?: CowFileOptions;
  /** Chunk size in 512-byte sectors: a power of two from 8 to 2^21. Default 32 (16 KiB). */
  chunkSectors?: number;
  /** Persistent snapshot (P, survives reactivation) or transient (N). Default true. */
  persistent?: boolean;
  /** Name of the snapshot device. Default NAME-snap. */
  name?: string;
  /**
   * Tag it as the origin's tracking snapshot: one kept between backups, whose exception
   * table lists every chunk written since it was taken (Snapshot.changes). Persistent only. Default false.
   */
  tracking?: boolean;
  /** Overwrite a COW device that carries a filesystem or other signature. Default false. */
  forceWipe?: boolean;
  /**
   * The application's hooks around the freeze (see snapshotGroup): commands or callbacks
   * run before the freeze and after the thaw, and a hook directory. Default: none.
   */
  hooks?: FreezeHookOptions;
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
  sizeBytes: Bytes;
  /** Normally false; true if the origin was left suspended (see recover). */
  suspended: boolean;
  /**
   * Each snapshot's status, with its COW device (a path, or MAJOR:MINOR), the COW file
   * dmsnap created for it (or null), chunk size in 512-byte sectors, persistence, and for
   * a tracking snapshot when it was taken (ISO 8601; null for others).
   */
  snapshots: (SnapshotStatusReport & { cow: string; cowFile: string | null; chunkSectors: Sectors; persistent: boolean; trackingSince: string | null })[];
  /**
   * The merge of a rollback NAME runs (null without one): the COW being merged back
   * (MAJOR:MINOR), whether it runs or the kernel stopped it on an error, and the sectors of
   * data still to copy (null once stopped).
   */
  merge: { cow: string; state: 'merging' | 'merge-failed'; leftSectors: Sectors | null } | null;
  /** The rollback recorded for the next boot (`rollback --at-boot`), or null. */
  rollbackAtBoot: RollbackAtBoot | null;
}

/** A device prepared by dmsnap: NAME (the wrapper the filesystem lives on) and NAME-real. */
export class Origin implements SnapshotOwner {
  /** @internal */
  constructor(
    /** @internal The client its calls use. */
    readonly dm: DeviceMapper,
    private readonly options: LifecycleOptions,
    readonly name: string,
    /** The id in the uuid tags of its devices (DMSNAP-<originId>-…). */
    readonly originId: string,
    /** The block device under the origin. */
    readonly backing: DevNumber & { path: string | null },
    /** Size in 512-byte sectors. */
    readonly sizeSectors: Sectors,
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
  get sizeBytes(): Bytes {
    return sectorsToBytes(this.sizeSectors);
  }

  /** The snapshots of this origin that exist now, read from the kernel. */
  async snapshots(): Promise<Snapshot[]> {
    const group = (await scanGroups(this.dm)).get(this.originId);
    const result: Snapshot[] = [];
    for (const device of group?.snaps ?? []) {
      const line = await firstTableLine(this.dm, device.name);
      if (!line || (line.type !== 'snapshot' && line.type !== 'snapshot-merge')) continue;
      // A persistent snapshot's table names its COW mapping; the user's COW is under it.
      const mapping = group!.cows.find((c) => c.tag.snapId === device.tag.snapId);
      const cowDevice = mapping ? await mappedCow(this.dm, mapping.name) : undefined;
      const ids = {
        snapId: device.tag.snapId!,
        cowFile: recordedCowFile(this.options, this.originId, device.tag.snapId!),
        trackingSince: device.tag.trackingSince === undefined ? null : new Date(device.tag.trackingSince * 1000),
        ...(cowDevice ? { cowDevice } : {}),
      };
      result.push(new Snapshot(this.dm, this, snapshotInfoFromTable(device.name, this.name, line.type, line.params, ids)));
    }
    return result.sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /**
   * The origin's tracking snapshot (taken with `tracking: true`): undefined when it has
   * none. While an incremental update runs there are two for a moment; this is the newest.
   */
  async trackingSnapshot(): Promise<Snapshot | undefined> {
    const tracking = (await this.snapshots()).filter((s) => s.info.trackingSince !== null).sort((a, b) => a.info.trackingSince!.getTime() - b.info.trackingSince!.getTime());
    return tracking.length > 0 ? tracking[tracking.length - 1] : undefined;
  }

  /** @internal Holds the origin's tracking chain (incremental updates and deltas) against another process's. */
  lockTracking(): Promise<OriginLock> {
    return System.of(this.dm).lock(`${this.name}@track`, this.options);
  }

  /** The origin and each of its snapshots, with usage. */
  async status(): Promise<OriginStatus> {
    const info = await this.dm.info(this.name);
    const snapshots = [];
    for (const snap of await this.snapshots()) {
      const report = await snap.status();
      snapshots.push({
        ...report,
        cow: cowLabel(snap.info),
        cowFile: snap.info.cowFile,
        chunkSectors: snap.info.chunkSectors,
        persistent: snap.info.persistent,
        trackingSince: snap.info.trackingSince?.toISOString() ?? null,
      });
    }
    const merge = await this.merge();
    const mergeStatus = merge
      ? { cow: merge.params.cow, state: merge.failed ? ('merge-failed' as const) : ('merging' as const), leftSectors: !merge.failed && merge.status.state === 'active' ? merge.status.dataSectors : null }
      : null;
    return { name: this.name, device: this.devicePath, backing: this.backing.path, sizeBytes: this.sizeBytes, suspended: info.suspended, snapshots, merge: mergeStatus, rollbackAtBoot: await findScheduled(this) };
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
    check(typeof options === 'object' && options !== null, 'options', 'an object with { cow } or { cowFile }', options);
    const { onStep, hooks, ...member } = options;
    const [snap] = await snapshotGroup([{ origin: this, ...member }], { ...(onStep ? { onStep } : {}), ...(hooks ? { hooks } : {}) });
    return snap;
  }

  /** Drops every snapshot of this origin, then removes NAME and NAME-real. EBUSY while mounted. */
  async release(): Promise<void> {
    const lock = await System.of(this.dm).lock(this.name, this.options);
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
          throw new DmsnapError(`${this.devicePath} is mounted or in use; unmount it before releasing ${this.name}`, 'EBUSY', { cause: error });
        }
        throw error;
      }
      await this.dm.remove(this.realName);
    } finally {
      lock();
    }
  }

  /**
   * Detaches the origin cleanly (its filesystem unmounted: EBUSY otherwise): its snapshots
   * on COW devices stay there, sealed with the origin's fingerprint, for `prepare` with
   * `attach` to bring back; the others are dropped; NAME and NAME-real go (see detach.ts).
   */
  detach(options: DetachOptions = {}): Promise<DetachReport> {
    check(typeof options === 'object' && options !== null, 'options', 'an object', options);
    return detachOrigin(this, options);
  }

  /** @internal The lock settings its calls use. */
  get lockOptions(): LockOptions {
    return this.options;
  }

  /**
   * @internal Drops one snapshot; restores the linear table when it was the last (see
   * drop.ts).
   */
  dropSnapshot(snap: Snapshot, options: DropOptions = {}): Promise<void> {
    return dropSnapshot(this, snap, options);
  }

  /** @internal Rolls back to one of its snapshots (see rollback.ts). */
  rollbackSnapshot(snap: Snapshot, options: RollbackOptions = {}): Promise<void> {
    return rollBackTo(this, snap, options);
  }

  /** The merge of a rollback that NAME runs now, or undefined. */
  merge(): Promise<MergeState | undefined> {
    return mergeState(this.dm, this.name);
  }

  /** Waits for the merge NAME runs (if any) and finishes it; resolves at once without one. */
  waitForMerge(options: Omit<RollbackOptions, 'wait'> = {}): Promise<void> {
    return waitForMerge(this, options);
  }

  /** The rollback recorded for the next boot (`snapshot.rollback({ atBoot: true })`), or null. */
  rollbackAtBoot(): Promise<RollbackAtBoot | null> {
    return findScheduled(this);
  }

  /** Cancels the rollback recorded for the next boot; the snapshot it named, or null when none was. */
  cancelRollbackAtBoot(): Promise<string | null> {
    return cancelRollbackAtBoot(this);
  }

  /** Finishes the merge NAME runs if it is done; whether it did. */
  finishMerge(): Promise<boolean> {
    return finishMergeLocked(this);
  }
}

/**
 * The first line of a device's live table; undefined when the device is gone meanwhile
 * (another process dropped that snapshot between the list and this call).
 */
async function firstTableLine(dm: DeviceMapper, name: string): Promise<TargetLine | undefined> {
  try {
    return (await dm.table(name))[0];
  } catch (error) {
    if (error instanceof DmError && error.code === 'ENXIO') return undefined;
    throw error;
  }
}
