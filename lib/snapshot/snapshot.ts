/**
 * A snapshot: a frozen, read-only view of an origin at one instant, backed by a COW
 * device that holds the origin's old blocks as they are overwritten.
 */
import { createReadStream, type ReadStream } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DeviceMapper } from '../dm/device-mapper';
import { DmsnapError } from '../errors';
import { ensureMountDir } from '../safety/paths';
import { parseSnapshotParams, parseSnapshotStatus } from '../targets/snapshot';
import { check, checkPath } from '../validate';
import { detectFilesystem, mountPlan, type FilesystemType } from './filesystem';
import type { DevNumber } from '../system/stack';
import type { Bytes, Sectors } from '../units';
import { changedExtents, type ChangedExtent } from './changes';
import { System } from '../system/system';
import type { StepHook } from './steps';
import type { RollbackOptions } from './rollback';

/** A snapshot's state, as `dmsnap status` reports it. */
export type SnapshotState = SnapshotStatusReport['state'];

/** The states in which the kernel reports the COW's usage. */
export type StateWithUsage = 'active' | 'orphaned' | 'merging';

/** How much of the COW is in use, as the kernel reports it. */
export interface CowUsage {
  /** Sectors of the COW in use (data and metadata). */
  allocatedSectors: Sectors;
  /** Size of the COW in sectors. */
  totalSectors: Sectors;
  /** Sectors holding the exception store's metadata. */
  metadataSectors: Sectors;
  /** Sectors of copied chunks (allocated − metadata). */
  dataSectors: Sectors;
  /** allocated / total × 100. */
  usedPercent: number;
}

/** The usage fields of a state without usage: all null. */
export type NoCowUsage = { [K in keyof CowUsage]: null };

/**
 * What the kernel says about a snapshot (step 4 of the procedure), discriminated on
 * `state`:
 * - 'active': the origin copies every block it overwrites into the COW first;
 * - 'orphaned': the snapshot device works, but its origin no longer feeds it copy-on-write
 *   (an interrupted call left the origin on its linear table): it does not show one
 *   instant any more. `dmsnap recover` removes it;
 * - 'merging': being merged back into its origin;
 * - 'invalid': the COW filled up and the snapshot is lost (the origin is unaffected);
 * - 'overflow': a PO snapshot's COW filled up;
 * - 'merge-failed', 'unknown': as the kernel says.
 * Usage is reported (not null) in the first three.
 */
export type SnapshotStatusReport =
  | ({ name: string; device: string; state: StateWithUsage } & CowUsage)
  | ({ name: string; device: string; state: 'invalid' | 'overflow' | 'merge-failed' | 'unknown' } & NoCowUsage);

/** Where a snapshot is mounted. */
export interface SnapshotMount {
  dir: string;
  fsType: FilesystemType;
}

/** Options of Snapshot.watch and Snapshot.onUsage. */
export interface WatchOptions {
  /** How often usage is sampled, in ms (default 1000). Invalidation is reported at once. */
  intervalMs?: number;
  /** Ends the watch. */
  signal?: AbortSignal;
}

/** What a snapshot is, as its table says. */
export interface SnapshotInfo {
  name: string;
  /** The origin's name, NAME. */
  originName: string;
  /** The device it reads the origin's blocks from (NAME-real). */
  origin: DevNumber;
  /**
   * The device the snapshot's table names as its COW: for a persistent snapshot, its COW
   * mapping (NAME-SNAP-cow, past dmsnap's label); path is null when sysfs does not name it.
   */
  cow: DevNumber & { path: string | null };
  /** The COW device the user named (or a COW file's loop device): `cow` itself for a transient snapshot. */
  cowDevice: DevNumber & { path: string | null };
  /** Chunk size in 512-byte sectors. */
  chunkSectors: Sectors;
  /** A persistent exception store (P or PO), kept on the COW device; false for a transient one (N). */
  persistent: boolean;
  /** 'snapshot', or 'snapshot-merge' while merging back. */
  targetType: string;
  /** The id in the snapshot device's uuid tag (DMSNAP-<originId>-snap-<snapId>). */
  snapId: string;
  /** The COW file dmsnap created for it (served by the loop device `cow`), or null for a COW device. */
  cowFile: string | null;
  /**
   * For a tracking snapshot (tag DMSNAP-<originId>-snap-<snapId>-track-<seconds>), when it
   * was taken (to the second): its exceptions are the origin's changes since. Null otherwise.
   */
  trackingSince: Date | null;
}

/** How a snapshot's COW device is named to people: the device they named, by path, or MAJOR:MINOR when sysfs does not name it. */
export function cowLabel(info: Pick<SnapshotInfo, 'cowDevice'>): string {
  return info.cowDevice.path ?? `${info.cowDevice.major}:${info.cowDevice.minor}`;
}

/** Options of Snapshot.drop. */
export interface DropOptions {
  /** Keep the COW file dmsnap created for the snapshot (it is deleted by default). */
  keepCowFile?: boolean;
  /** @internal Test hook called after each step. */
  onStep?: StepHook;
}

/** What a Snapshot needs from its origin to drop itself (an Origin). */
export interface SnapshotOwner {
  /** The origin's size in bytes. */
  readonly sizeBytes: Bytes;
  /** @internal */
  dropSnapshot(snapshot: Snapshot, options?: DropOptions): Promise<void>;
  /** @internal */
  rollbackSnapshot(snapshot: Snapshot, options?: RollbackOptions): Promise<void>;
}

/**
 * A snapshot of an origin: the read-only view /dev/mapper/NAME, its status, a mount for
 * file-level backups, and drop. `await using` drops it at the end of the scope.
 */
export class Snapshot implements AsyncDisposable {
  /** Milliseconds the origin was suspended (suspend issued to resume returned), when this call took it. */
  readonly freezeMs?: number;
  private mounted?: SnapshotMount;

  /** @internal */
  constructor(
    private readonly dm: DeviceMapper,
    private readonly owner: SnapshotOwner,
    readonly info: SnapshotInfo,
    freezeMs?: number,
  ) {
    if (freezeMs !== undefined) this.freezeMs = freezeMs;
  }

  /** @internal The client its calls use. */
  get dmClient(): DeviceMapper {
    return this.dm;
  }

  /** The snapshot's device-mapper name. */
  get name(): string {
    return this.info.name;
  }

  /** The read-only view: /dev/mapper/NAME. */
  get devicePath(): string {
    return this.dm.devicePath(this.info.name);
  }

  /** Where `mount()` mounted it, if it did. */
  get mountInfo(): SnapshotMount | undefined {
    return this.mounted;
  }

  /** The kernel's view of the snapshot: state and COW usage. */
  async status(): Promise<SnapshotStatusReport> {
    const [lines, [originLine]] = await Promise.all([
      this.dm.status(this.info.name),
      this.dm.table(this.info.originName).catch(() => []),
    ]);
    const type = lines[0]?.type;
    const base = { name: this.info.name, device: this.devicePath };
    const none: NoCowUsage = { allocatedSectors: null, totalSectors: null, metadataSectors: null, dataSectors: null, usedPercent: null };
    if (!lines[0] || (type !== 'snapshot' && type !== 'snapshot-merge')) return { ...base, state: 'unknown', ...none };
    // Being rolled back to: the origin's snapshot-merge owns this COW now and reports its usage.
    const merging = originLine?.type === 'snapshot-merge' && parseSnapshotParams(originLine.params).cow === `${this.info.cow.major}:${this.info.cow.minor}`;
    const parsed = parseSnapshotStatus(merging ? ((await this.dm.status(this.info.originName))[0]?.params ?? '') : lines[0].params);
    if (merging && parsed.state !== 'active') return { ...base, state: 'merge-failed', ...none };
    if (parsed.state !== 'active') return { ...base, state: parsed.state, ...none };
    // Active only while the origin copies its old blocks here before it overwrites them.
    const fed = originLine?.type === 'snapshot-origin' && originLine.params === `${this.info.origin.major}:${this.info.origin.minor}`;
    return {
      ...base,
      state: merging || type === 'snapshot-merge' ? 'merging' : fed ? 'active' : 'orphaned',
      allocatedSectors: parsed.allocatedSectors,
      totalSectors: parsed.totalSectors,
      metadataSectors: parsed.metadataSectors,
      dataSectors: parsed.dataSectors,
      usedPercent: parsed.usedPercent,
    };
  }

  /**
   * Status updates as an async iterator: the current status first, then one whenever
   * the device raises an event (the kernel raises one when the snapshot becomes
   * invalid, so that is reported at once) and every `intervalMs` for usage. Ends when
   * the signal aborts, the loop breaks, or the snapshot goes away.
   */
  async *watch(options: WatchOptions = {}): AsyncGenerator<SnapshotStatusReport, void, undefined> {
    const intervalMs = options.intervalMs ?? 1000;
    check(Number.isFinite(intervalMs) && intervalMs > 0, 'intervalMs', 'a positive number of milliseconds', intervalMs);
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    options.signal?.addEventListener('abort', onAbort);
    let eventWait: Promise<unknown> | undefined;
    try {
      let eventNr = (await this.dm.info(this.info.name)).eventNr;
      yield await this.status();
      while (!stop.signal.aborted) {
        eventWait ??= this.dm.waitEvent(this.info.name, eventNr, { signal: stop.signal });
        const tick = new AbortController();
        const woke = await Promise.race([
          eventWait.then(
            () => 'event' as const,
            () => 'gone' as const,
          ),
          sleep(intervalMs, 'tick' as const, { signal: tick.signal }).catch(() => 'stopped' as const),
          new Promise<'stopped'>((resolve) => stop.signal.addEventListener('abort', () => resolve('stopped'), { once: true })),
        ]);
        tick.abort();
        if (woke === 'stopped' || stop.signal.aborted) return;
        if (woke === 'gone') {
          // The wait ended without an event: the device is gone, or the caller stopped.
          if (!(await this.dm.find(this.info.name))) return;
          eventWait = undefined;
          continue;
        }
        if (woke === 'event') {
          eventNr = (await this.dm.info(this.info.name)).eventNr;
          eventWait = undefined;
        }
        let report: SnapshotStatusReport;
        try {
          report = await this.status();
        } catch (error) {
          if (!(await this.dm.find(this.info.name))) return;
          throw error;
        }
        yield report;
      }
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      stop.abort();
      await eventWait?.catch(() => undefined);
    }
  }

  /**
   * Calls `fn` once, as soon as usage reaches `percent` or the snapshot stops being
   * usable (invalid, overflow, orphaned…). Returns a function that stops watching.
   */
  onUsage(percent: number, fn: (report: SnapshotStatusReport) => void, options: WatchOptions = {}): () => void {
    check(Number.isFinite(percent) && percent > 0 && percent <= 100, 'percent', 'a number above 0 and at most 100', percent);
    const stop = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
    void (async () => {
      for await (const report of this.watch({ ...options, signal })) {
        const unusable = report.state !== 'active' && report.state !== 'merging';
        if (unusable || (report.usedPercent !== null && report.usedPercent >= percent)) {
          stop.abort();
          fn(report);
          return;
        }
      }
    })().catch(() => undefined);
    return () => stop.abort();
  }

  /**
   * Reads the whole snapshot device, in large aligned reads (1 MiB by default), for a
   * block-level backup.
   */
  createReadStream(options: { highWaterMark?: number; start?: number; end?: number } = {}): ReadStream {
    return createReadStream(this.devicePath, { highWaterMark: 1024 * 1024, ...options });
  }

  /**
   * Mounts the snapshot read-only on `dir` (created, mode 0700, if missing), with the options
   * its filesystem needs on a frozen copy (XFS: nouuid; ext4: noload). Refuses
   * Btrfs. Also nosuid, nodev, noexec. Refuses (ERR_DMSNAP_UNSAFE_MOUNT_DIR) a `dir` that is
   * a symlink, that another user owns, or whose parents another user can write to (unless
   * sticky): such a path could be swapped before the mount.
   */
  async mount(dir: string): Promise<SnapshotMount> {
    checkPath(dir, 'dir');
    if (this.mounted) {
      throw new DmsnapError(`snapshot ${this.info.name} is already mounted on ${this.mounted.dir}`, 'ERR_DMSNAP_MOUNTED');
    }
    const fsType = await detectFilesystem(this.devicePath);
    const plan = mountPlan(fsType, this.devicePath);
    const target = ensureMountDir(dir);
    await System.of(this.dm).mount(this.devicePath, target, plan.fstype, plan.flags, plan.data);
    this.mounted = { dir: target, fsType: fsType! };
    return this.mounted;
  }

  /** Unmounts what `mount()` mounted (or `dir`, for a snapshot mounted by another process). */
  async unmount(dir?: string): Promise<void> {
    const target = dir ?? this.mounted?.dir;
    if (!target) throw new DmsnapError(`snapshot ${this.info.name} is not mounted by this process; name the directory`, 'ERR_DMSNAP_NOT_MOUNTED');
    await System.of(this.dm).unmount(target);
    if (this.mounted?.dir === target) this.mounted = undefined;
  }

  /**
   * Removes the snapshot (step 5). When it was the origin's last, the origin goes back
   * to its linear table. Works on an invalid snapshot too. Fails with EBUSY while the
   * snapshot is mounted or open.
   */
  /**
   * The origin's extents written since this snapshot was taken, in origin order, read from
   * its persistent exception store: what an incremental backup copies. Whole chunks; it
   * may name chunks written after a later snapshot too (copy those from that snapshot).
   * Fails with ERR_DMSNAP_SNAPSHOT_INVALID once the snapshot is invalid: the change set is lost.
   */
  changes(): AsyncGenerator<ChangedExtent> {
    return changedExtents(this, this.owner.sizeBytes);
  }

  async drop(options: DropOptions = {}): Promise<void> {
    check(typeof options === 'object' && options !== null, 'options', 'an object', options);
    check(options.keepCowFile === undefined || typeof options.keepCowFile === 'boolean', 'keepCowFile', 'a boolean', options.keepCowFile);
    if (this.mounted) await this.unmount();
    await this.owner.dropSnapshot(this, options);
  }

  /**
   * Rolls the origin back to this snapshot: merges it back with snapshot-merge (see
   * rollback.ts). EBUSY while the origin or this snapshot is mounted or open. With wait,
   * resolves once the merge is done and finished; otherwise at once, while the kernel
   * copies in the background (the origin already reads as the snapshot). With atBoot,
   * records the rollback for the next boot instead (see rollback-at-boot.ts); the origin
   * may stay mounted.
   */
  async rollback(options: RollbackOptions = {}): Promise<void> {
    check(typeof options === 'object' && options !== null, 'options', 'an object', options);
    check(options.wait === undefined || typeof options.wait === 'boolean', 'wait', 'a boolean', options.wait);
    check(options.atBoot === undefined || typeof options.atBoot === 'boolean', 'atBoot', 'a boolean', options.atBoot);
    check(!(options.atBoot === true && options.wait === true), 'wait', 'false or absent with atBoot (the merge starts at the next boot)', options.wait);
    check(options.pollMs === undefined || (Number.isFinite(options.pollMs) && options.pollMs > 0), 'pollMs', 'a positive number of milliseconds', options.pollMs);
    check(options.onProgress === undefined || typeof options.onProgress === 'function', 'onProgress', 'a function', options.onProgress);
    await this.owner.rollbackSnapshot(this, options);
  }

  /** Drops the snapshot, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.drop();
  }
}
