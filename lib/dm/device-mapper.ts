/**
 * The device-mapper client: one object per open /dev/mapper/control descriptor, a
 * method per ioctl, typed inputs and outputs. Arguments are validated here, before any
 * ioctl; the native layer only marshals.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { DmError, DmsnapError } from '../errors';
import { appendHint } from '../explain';
import {
  callNative,
  loadBinding,
  type NativeBinding,
  type NativeControl,
  type NativeDeviceInfo,
  type NativeDeviceRef,
  type NativeTarget,
} from '../native';
import { sectors, type Sectors } from '../units';
import { check, checkInteger, checkPath, checkString } from '../validate';
import { runFreeze, type FreezeOptions, type FreezeOutcome } from './freeze';
import { checkDeviceName, checkDeviceUuid } from './names';
import { maskTableKeys, tableCarriesKeys } from '../targets/keys';
import { checkTable, formatTable, parseTable, type TargetLine } from './table';
import { NodeSync, type NodeSyncOptions, type UdevBatch } from './udev';

/** The default path of the device-mapper control node. */
export const DEFAULT_CONTROL_PATH = '/dev/mapper/control';

/** Options of DeviceMapper.open; the udev ones decide how /dev/mapper nodes are kept. */
export interface DeviceMapperOptions extends NodeSyncOptions {
  /** The control node to open; default /dev/mapper/control. */
  controlPath?: string;
  /** @internal The native binding to use; tests inject a fake one. */
  binding?: NativeBinding;
}

/** The kernel's device-mapper ioctl interface version, e.g. 4.47.0. */
export interface DriverVersion {
  major: number;
  minor: number;
  patch: number;
  /** "4.47.0", as `dmsetup version` prints it. */
  text: string;
}

/**
 * Names a device: by name (a plain string or `{ name }`), by uuid, or by device number.
 */
export type DeviceRef = string | { name: string } | { uuid: string } | { major: number; minor: number };

/** What DM_DEV_STATUS (and most other ioctls) report about a device. */
export interface DeviceInfo {
  name: string;
  /** The device's uuid, or null when it has none. */
  uuid: string | null;
  major: number;
  minor: number;
  /** How many openers the device has (mounts, other tables, processes). */
  openCount: number;
  /** The device's event counter; targets raise events (e.g. an invalidated snapshot). */
  eventNr: number;
  /** Targets in the live table (in the inactive one for `info(ref, { inactive: true })`). */
  targetCount: number;
  suspended: boolean;
  readOnly: boolean;
  /** A live table is loaded. */
  liveTable: boolean;
  /** A table waits in the inactive slot for the next resume. */
  inactiveTable: boolean;
  /** Removal is deferred until the last opener closes the device. */
  deferredRemove: boolean;
}

/** One device from `list()`. */
export interface DeviceListEntry {
  name: string;
  major: number;
  minor: number;
  /** Absent where the kernel does not report it. */
  eventNr?: number;
  /** The uuid, null when the device has none. */
  uuid: string | null;
}

/** A target type the kernel knows, from `targets()`. */
export interface TargetVersion {
  name: string;
  version: [number, number, number];
  /** "1.16.0" */
  text: string;
}

/** Options of DeviceMapper.create. */
export interface CreateOptions {
  /** The device's uuid. It never changes once set; a device created without one can get one with setUuid. */
  uuid?: string;
  /** Load this table and resume, as `dmsetup create --table` does. Without it the device has no table. */
  table?: readonly TargetLine[] | string;
  /** Load the table read-only. */
  readOnly?: boolean;
  /** Extra udev flags for the activation (see UdevFlags), e.g. to hide a private layer from blkid. */
  udevFlags?: number;
}

/** Flags of DM_DEV_SUSPEND, for suspend and resume. */
export interface SuspendOptions {
  /** Do not freeze the filesystem on the device (DM_SKIP_LOCKFS_FLAG). Off by default. */
  skipLockfs?: boolean;
  /** Do not flush queued I/O (DM_NOFLUSH_FLAG). Off by default. */
  noFlush?: boolean;
}

/** Options of DeviceMapper.resume. */
export interface ResumeOptions extends SuspendOptions {
  /** Extra udev flags for the resume's uevent (see UdevFlags), e.g. to hide a private layer from blkid. */
  udevFlags?: number;
  /**
   * Share a udev cookie with other calls and wait for udev once, at `batch.finish()`
   * (see `DeviceMapper.udevBatch`). Used where nothing may wait between ioctls.
   */
  batch?: UdevBatch;
}

/** Options of DeviceMapper.remove. */
export interface RemoveOptions {
  /** If the device is in use, remove it when its last user closes it (DM_DEFERRED_REMOVE). */
  deferred?: boolean;
  /**
   * Retry while the kernel answers EBUSY, for up to about 5 seconds: udev and blkid open
   * new devices briefly. Default true.
   */
  retry?: boolean;
  /** Extra udev flags for the remove's uevent (see UdevFlags). */
  udevFlags?: number;
}

/** Options of DeviceMapper.waitEvent. */
export interface WaitOptions {
  /** Cancels the wait: the call rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Give up after this many milliseconds (AbortError with code 'ABORT_ERR'). */
  timeoutMs?: number;
}

const REMOVE_RETRIES = 25;
const REMOVE_RETRY_DELAY_MS = 200;

/**
 * A device-mapper client: one open control descriptor, one method per ioctl. Get one with
 * `DeviceMapper.open()` and close it when done.
 */
export class DeviceMapper {
  private readonly nodes: NodeSync;

  private constructor(
    private readonly binding: NativeBinding,
    private readonly control: NativeControl,
    options: DeviceMapperOptions,
  ) {
    this.nodes = new NodeSync(binding, options);
  }

  /**
   * Opens the control node. Fails with code 'ENOENT' when dm-mod is not loaded and
   * 'EACCES' when the caller is not root.
   */
  static async open(options: DeviceMapperOptions = {}): Promise<DeviceMapper> {
    const path = options.controlPath ?? DEFAULT_CONTROL_PATH;
    checkPath(path, 'controlPath');
    if (options.udevTimeoutMs !== undefined) checkInteger(options.udevTimeoutMs, 'udevTimeoutMs', 0, 2 ** 31 - 1);
    const binding = options.binding ?? loadBinding();
    const control = await callNative(() => binding.openControl(path));
    return new DeviceMapper(binding, control, options);
  }

  /** The path of the control node this client uses. */
  get controlPath(): string {
    return this.control.path;
  }

  /** Whether close() was called; every ioctl then fails with ERR_DMSNAP_CLOSED. */
  get closed(): boolean {
    return this.control.closed;
  }

  /** @internal The native binding this client uses (for the lifecycle's block-device calls). */
  get nativeBinding(): NativeBinding {
    return this.binding;
  }

  /** Whether this client synchronises with udev (else it manages /dev/mapper nodes itself). */
  get udev(): boolean {
    return this.nodes.udev;
  }

  /** The /dev/mapper path of a device name. */
  devicePath(name: string): string {
    checkDeviceName(name);
    return this.nodes.nodePath(name);
  }

  /** DM_VERSION: the kernel's device-mapper interface version. */
  async version(): Promise<DriverVersion> {
    const [major, minor, patch] = await this.call(() => this.control.version());
    return { major, minor, patch, text: `${major}.${minor}.${patch}` };
  }

  /**
   * DM_LIST_DEVICES: every device-mapper device, sorted by name. Kernels before interface
   * 4.45 do not list uuids: then each device's comes from DM_DEV_STATUS, as dmsetup does,
   * and a device removed in between is left out.
   */
  async list(): Promise<DeviceListEntry[]> {
    const entries = await this.call(() => this.control.listDevices());
    const listed: DeviceListEntry[] = [];
    for (const e of entries) {
      let uuid = e.uuid;
      if (uuid === undefined) {
        const info = await this.find({ major: e.major, minor: e.minor });
        if (!info || info.name !== e.name) continue;
        uuid = info.uuid;
      }
      const entry: DeviceListEntry = { name: e.name, major: e.major, minor: e.minor, uuid };
      if (e.eventNr !== undefined) entry.eventNr = e.eventNr;
      listed.push(entry);
    }
    return listed.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** DM_LIST_VERSIONS: the target types the kernel has loaded. */
  async targets(): Promise<TargetVersion[]> {
    const versions = await this.call(() => this.control.listVersions());
    return versions.map((v) => ({ name: v.name, version: v.version, text: v.version.join('.') }));
  }

  /**
   * DM_DEV_CREATE, and with a table also DM_TABLE_LOAD and resume, as `dmsetup create`.
   * If loading or resuming fails, the new device is removed again.
   */
  async create(name: string, options: CreateOptions = {}): Promise<DeviceInfo> {
    checkDeviceName(name);
    if (options.uuid !== undefined) checkDeviceUuid(options.uuid);
    const table = options.table === undefined ? undefined : this.checkedTable(options.table);
    const { constants } = this.binding;
    const created = await this.call(() => this.control.create(name, options.uuid ?? '', 0));
    // Without udev the node comes now, as with libdevmapper; with udev, at activation.
    await this.nodes.ensureNode(name, created.major, created.minor, true);
    if (!table) return this.toInfo(created);
    try {
      await this.loadChecked({ name }, table, options.readOnly ? constants.DM_READONLY_FLAG : 0);
      return await this.resume(name, { udevFlags: options.udevFlags });
    } catch (error) {
      await this.remove(name, { retry: true }).catch(() => undefined);
      throw error;
    }
  }

  /** DM_TABLE_LOAD: puts a table in the device's inactive slot; `resume` makes it live. */
  async load(ref: DeviceRef, table: readonly TargetLine[] | string, options: { readOnly?: boolean } = {}): Promise<DeviceInfo> {
    const nativeRef = this.ref(ref);
    const lines = this.checkedTable(table);
    return this.toInfo(await this.loadChecked(nativeRef, lines, options.readOnly ? this.binding.constants.DM_READONLY_FLAG : 0));
  }

  /** DM_TABLE_CLEAR: drops the inactive table. */
  async clear(ref: DeviceRef): Promise<DeviceInfo> {
    const nativeRef = this.ref(ref);
    return this.toInfo(await this.call(() => this.control.clear(nativeRef)));
  }

  /**
   * DM_DEV_SUSPEND: suspends the device. By default it flushes queued I/O and freezes a
   * filesystem mounted on it (what makes a snapshot consistent).
   */
  async suspend(ref: DeviceRef, options: SuspendOptions = {}): Promise<DeviceInfo> {
    const nativeRef = this.ref(ref);
    const flags = this.suspendFlags(options);
    return this.toInfo(await this.call(() => this.control.suspend(nativeRef, flags)));
  }

  /** DM_DEV_SUSPEND without the suspend flag: resumes, making an inactive table live. */
  async resume(ref: DeviceRef, options: ResumeOptions = {}): Promise<DeviceInfo> {
    const nativeRef = this.ref(ref);
    const flags = this.suspendFlags(options);
    const { info, udevSynced } = await this.nodes.withCookie(
      options.udevFlags ?? 0,
      (eventNr) => this.call(() => this.control.resume(nativeRef, flags, eventNr)),
      options.batch,
    );
    if (options.batch) options.batch.ensureNodeLater(info.name, info.major, info.minor);
    else await this.nodes.ensureNode(info.name, info.major, info.minor, udevSynced);
    return this.toInfo(info);
  }

  /**
   * The freeze of a snapshot, in one native call on a thread of its own with memory
   * locked: suspends `origin` (flushing and freezing its filesystem), resumes `snapshot`,
   * resumes `origin`. Both resumes share `options.batch`'s udev cookie. If a step fails
   * once the origin is suspended, the origin is resumed with its previous table before
   * the call rejects; the error has `freezeStep` and `recovery` (see lib/dm/freeze.ts).
   */
  async freeze(origin: DeviceRef, snapshot: DeviceRef, options: FreezeOptions): Promise<FreezeOutcome<DeviceInfo>> {
    const originRef = this.ref(origin);
    const snapshotRef = this.ref(snapshot);
    const flags = this.suspendFlags({ skipLockfs: options.skipLockfs });
    const done = await this.call(() => runFreeze(this.control, originRef, snapshotRef, flags, options));
    return { ...done, snapshot: this.toInfo(done.snapshot), origin: this.toInfo(done.origin) };
  }

  /**
   * Starts a batch of resumes that share one udev cookie; `finish()` waits for udev once.
   * Without udev, finish() only makes the /dev/mapper nodes.
   */
  udevBatch(): UdevBatch {
    return this.nodes.batch();
  }

  /** DM_DEV_REMOVE. Fails with EBUSY while the device is open (mounted, or used by another table). */
  async remove(ref: DeviceRef, options: RemoveOptions = {}): Promise<DeviceInfo> {
    const nativeRef = this.ref(ref);
    const { constants } = this.binding;
    const flags = options.deferred ? constants.DM_DEFERRED_REMOVE : 0;
    const attempts = options.retry === false ? 1 : REMOVE_RETRIES;
    for (let attempt = 1; ; attempt++) {
      // The kernel answers a remove with the request as sent: read the device first, for
      // its name (the node to remove) and a meaningful result.
      const before = await this.call(() => this.control.info(nativeRef, 0));
      try {
        const { info, udevSynced } = await this.nodes.withCookie(options.udevFlags ?? 0, (eventNr) =>
          this.call(() => this.control.remove({ name: before.name }, flags, eventNr)),
        );
        const deferred = (info.flags & constants.DM_DEFERRED_REMOVE) !== 0;
        if (!deferred) await this.nodes.removeNode(before.name, udevSynced, before);
        return { ...this.toInfo(before), deferredRemove: deferred };
      } catch (error) {
        if (!(error instanceof DmError && error.code === 'EBUSY') || attempt >= attempts) throw error;
        await sleep(REMOVE_RETRY_DELAY_MS);
      }
    }
  }

  /** DM_DEV_RENAME: gives the device a new name. */
  async rename(ref: DeviceRef, newName: string): Promise<DeviceInfo> {
    const nativeRef = this.ref(ref);
    checkDeviceName(newName, 'newName');
    const before = await this.call(() => this.control.info(nativeRef, 0));
    const { info, udevSynced } = await this.nodes.withCookie(0, (eventNr) =>
      this.call(() => this.control.rename(nativeRef, newName, 0, eventNr)),
    );
    await this.nodes.removeNode(before.name, udevSynced, before);
    await this.nodes.ensureNode(newName, info.major, info.minor, udevSynced);
    return this.toInfo({ ...info, name: newName });
  }

  /** DM_DEV_RENAME with DM_UUID_FLAG: sets the uuid of a device that has none (a uuid never changes). */
  async setUuid(ref: DeviceRef, uuid: string): Promise<DeviceInfo> {
    const nativeRef = this.ref(ref);
    checkDeviceUuid(uuid);
    const { info } = await this.nodes.withCookie(0, (eventNr) =>
      this.call(() => this.control.rename(nativeRef, uuid, this.binding.constants.DM_UUID_FLAG, eventNr)),
    );
    return this.toInfo({ ...info, uuid });
  }

  /** DM_DEV_STATUS: the device's state. Fails with ENXIO if it does not exist. */
  async info(ref: DeviceRef, options: { inactive?: boolean } = {}): Promise<DeviceInfo> {
    const nativeRef = this.ref(ref);
    const flags = options.inactive ? this.binding.constants.DM_QUERY_INACTIVE_TABLE_FLAG : 0;
    return this.toInfo(await this.call(() => this.control.info(nativeRef, flags)));
  }

  /** The device's state, or undefined if no such device exists. */
  async find(ref: DeviceRef): Promise<DeviceInfo | undefined> {
    try {
      return await this.info(ref);
    } catch (error) {
      if (error instanceof DmError && error.code === 'ENXIO') return undefined;
      throw error;
    }
  }

  /**
   * DM_TABLE_STATUS with DM_STATUS_TABLE_FLAG: the live (or inactive) table, devices as
   * major:minor. Keys of crypt and integrity targets are returned as the kernel prints
   * them, so that the table can be loaded again; hide them with `maskTableKeys` before
   * showing a table. The query is sent with DM_SECURE_DATA_FLAG, so the kernel and the
   * addon wipe their buffers after use.
   */
  async table(ref: DeviceRef, options: { inactive?: boolean } = {}): Promise<TargetLine[]> {
    const nativeRef = this.ref(ref);
    const { constants } = this.binding;
    const flags =
      constants.DM_STATUS_TABLE_FLAG | constants.DM_SECURE_DATA_FLAG | (options.inactive ? constants.DM_QUERY_INACTIVE_TABLE_FLAG : 0);
    const { targets } = await this.call(() => this.control.tableStatus(nativeRef, flags));
    return targets.map(toTargetLine);
  }

  /**
   * DM_TABLE_STATUS: each target's status text (e.g. `6496/25189857 64` for a snapshot),
   * sent with DM_SECURE_DATA_FLAG as `table` is.
   */
  async status(ref: DeviceRef, options: { inactive?: boolean; noFlush?: boolean } = {}): Promise<TargetLine[]> {
    const nativeRef = this.ref(ref);
    const { constants } = this.binding;
    const flags =
      constants.DM_SECURE_DATA_FLAG |
      (options.inactive ? constants.DM_QUERY_INACTIVE_TABLE_FLAG : 0) |
      (options.noFlush ? constants.DM_NOFLUSH_FLAG : 0);
    const { targets } = await this.call(() => this.control.tableStatus(nativeRef, flags));
    return targets.map(toTargetLine);
  }

  /** DM_TABLE_DEPS: the devices the table uses. */
  async deps(ref: DeviceRef, options: { inactive?: boolean } = {}): Promise<{ major: number; minor: number }[]> {
    const nativeRef = this.ref(ref);
    const flags = options.inactive ? this.binding.constants.DM_QUERY_INACTIVE_TABLE_FLAG : 0;
    const { devices } = await this.call(() => this.control.deps(nativeRef, flags));
    return devices.map(([major, minor]) => ({ major, minor }));
  }

  /** DM_TARGET_MSG: sends a message to the target at `sector`; returns its reply, if any. */
  async message(ref: DeviceRef, sector: number, message: string): Promise<string | null> {
    const nativeRef = this.ref(ref);
    checkInteger(sector, 'sector');
    checkString(message, 'message');
    check(message.length > 0 && !message.includes('\0'), 'message', 'a non-empty string without NUL bytes', message);
    return this.call(() => this.control.message(nativeRef, sector, message)).catch((error: unknown) => {
      if (error instanceof DmError && error.code === 'EINVAL') {
        appendHint(error, `the target does not accept the message "${message}"`);
      }
      throw error;
    });
  }

  /**
   * Waits until the device's event counter differs from `eventNr` (default: its value
   * now, i.e. the next event), like DM_DEV_WAIT and `dmsetup wait`. Uses DM_DEV_ARM_POLL
   * and poll(2) on a descriptor of its own, so no thread-pool thread is held; cancel it
   * with an AbortSignal.
   */
  async waitEvent(ref: DeviceRef, eventNr?: number, options: WaitOptions = {}): Promise<DeviceInfo> {
    const nativeRef = this.ref(ref);
    if (eventNr !== undefined) checkInteger(eventNr, 'eventNr', 0, 0xffffffff);
    const signals = [options.signal, options.timeoutMs === undefined ? undefined : AbortSignal.timeout(options.timeoutMs)];
    const active = signals.filter((s): s is AbortSignal => s !== undefined);
    const signal = active.length > 1 ? AbortSignal.any(active) : active[0];
    signal?.throwIfAborted();
    // Follow the device by number: a rename (itself an event) must not lose it.
    const now = await this.call(() => this.control.info(nativeRef, 0));
    const byNumber: NativeDeviceRef = { major: now.major, minor: now.minor };
    const target = eventNr ?? now.eventNr;
    const poller = await callNative(() => this.binding.openControl(this.control.path));
    const cancel = () => poller.cancelPoll();
    signal?.addEventListener('abort', cancel);
    try {
      for (;;) {
        // Arm first, then look: an event between the two still wakes the poll.
        try {
          await callNative(() => poller.armPoll());
        } catch (error) {
          // Kernels before device-mapper 4.36 have no DM_DEV_ARM_POLL: fall back to
          // DM_DEV_WAIT, which holds a thread-pool thread and cannot be cancelled.
          if (error instanceof DmError && (error.code === 'ENOTTY' || error.code === 'EINVAL')) {
            return this.toInfo(await this.call(() => this.control.waitEvent(byNumber, target)));
          }
          throw error;
        }
        const info = await this.call(() => this.control.info(byNumber, 0));
        if (info.eventNr !== target) return this.toInfo(info);
        signal?.throwIfAborted();
        const readable = await callNative(() => poller.pollReadable());
        if (!readable) signal?.throwIfAborted();
      }
    } finally {
      signal?.removeEventListener('abort', cancel);
      poller.close();
    }
  }

  /** Closes the control node; calls already in flight still complete. */
  close(): void {
    this.control.close();
  }

  /** Closes the control node, for `using dm = await DeviceMapper.open()`. */
  [Symbol.dispose](): void {
    this.close();
  }

  private call<T>(op: () => Promise<T>): Promise<T> {
    if (this.control.closed) {
      return Promise.reject(new DmsnapError(`the device-mapper client for ${this.control.path} is closed`, 'ERR_DMSNAP_CLOSED'));
    }
    return callNative(op);
  }

  /**
   * DM_TABLE_LOAD. A table with keys (crypt, integrity) goes with DM_SECURE_DATA_FLAG:
   * the kernel wipes its copy and the addon its buffers; error messages show it masked.
   */
  private async loadChecked(ref: NativeDeviceRef, table: TargetLine[], flagsIn: number): Promise<NativeDeviceInfo> {
    const targets: NativeTarget[] = table.map((t) => ({ start: t.start, length: t.length, type: t.type, params: t.params }));
    const flags = tableCarriesKeys(table) ? flagsIn | this.binding.constants.DM_SECURE_DATA_FLAG : flagsIn;
    try {
      return await this.call(() => this.control.load(ref, targets, flags));
    } catch (error) {
      if (error instanceof DmError && (error.code === 'EINVAL' || error.code === 'ENODEV' || error.code === 'ENOTBLK')) {
        const text = formatTable(maskTableKeys(table)).trimEnd().replace(/\n/g, '; ');
        const why = error.code === 'EINVAL' ? 'the kernel rejected the table' : 'a device named in the table cannot be used in';
        appendHint(error, `${why} "${text}"; see dmesg for the target's reason`);
      }
      throw error;
    }
  }

  private checkedTable(table: readonly TargetLine[] | string): TargetLine[] {
    const lines = typeof table === 'string' ? parseTable(table) : [...table];
    checkTable(lines);
    return lines;
  }

  private suspendFlags(options: SuspendOptions): number {
    const { constants } = this.binding;
    return (options.skipLockfs ? constants.DM_SKIP_LOCKFS_FLAG : 0) | (options.noFlush ? constants.DM_NOFLUSH_FLAG : 0);
  }

  private ref(ref: DeviceRef): NativeDeviceRef {
    if (typeof ref === 'string') {
      checkDeviceName(ref);
      return { name: ref };
    }
    check(typeof ref === 'object' && ref !== null, 'device', 'a name, { name }, { uuid } or { major, minor }', ref);
    if ('name' in ref) {
      checkDeviceName(ref.name);
      return { name: ref.name };
    }
    if ('uuid' in ref) {
      checkDeviceUuid(ref.uuid);
      return { uuid: ref.uuid };
    }
    checkInteger((ref as { major: unknown }).major, 'major', 0, 0xfffff);
    checkInteger((ref as { minor: unknown }).minor, 'minor', 0, 0xfffff);
    return { major: ref.major, minor: ref.minor };
  }

  private toInfo(info: NativeDeviceInfo): DeviceInfo {
    const c = this.binding.constants;
    return {
      name: info.name,
      uuid: info.uuid === '' ? null : info.uuid,
      major: info.major,
      minor: info.minor,
      openCount: info.openCount,
      eventNr: info.eventNr,
      targetCount: info.targetCount,
      suspended: (info.flags & c.DM_SUSPEND_FLAG) !== 0,
      readOnly: (info.flags & c.DM_READONLY_FLAG) !== 0,
      liveTable: (info.flags & c.DM_ACTIVE_PRESENT_FLAG) !== 0,
      inactiveTable: (info.flags & c.DM_INACTIVE_PRESENT_FLAG) !== 0,
      deferredRemove: (info.flags & c.DM_DEFERRED_REMOVE) !== 0,
    };
  }
}

function toTargetLine(target: NativeTarget): TargetLine {
  return { start: sectors(target.start), length: sectors(target.length), type: target.type, params: target.params };
}

export type { Sectors };
