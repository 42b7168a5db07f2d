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
} from '../native';
import type { Sectors } from '../units';
import { check, checkInteger, checkPath, checkString } from '../validate';
import { runFreeze, type FreezeOptions, type FreezeOutcome, type GroupFreezeMember, type GroupFreezeOutcome } from './freeze';
import { checkDeviceName, checkDeviceUuid } from './names';
import { checkedTable, suspendFlags, toDeviceInfo, toNativeRef, toTargetLine } from './convert';
import type { TargetLine } from './table';
import { loadTable } from './load';
import { waitForEvent } from './wait';
import { NodeSync, type UdevBatch } from './udev';

export { DEFAULT_CONTROL_PATH } from './types';
export type { DeviceMapperOptions, DriverVersion, DeviceRef, DeviceInfo, DeviceListEntry, TargetVersion, CreateOptions, SuspendOptions, ResumeOptions, RemoveOptions, WaitOptions } from './types';
import { DEFAULT_CONTROL_PATH, type DeviceMapperOptions, type DriverVersion, type DeviceRef, type DeviceInfo, type DeviceListEntry, type TargetVersion, type CreateOptions, type SuspendOptions, type ResumeOptions, type RemoveOptions, type WaitOptions } from './types';

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
    const table = options.table === undefined ? undefined : checkedTable(options.table);
    const { constants } = this.binding;
    const created = await this.call(() => this.control.create(name, options.uuid ?? '', 0));
    // Without udev the node comes now, as with libdevmapper; with udev, at activation.
    await this.nodes.ensureNode(name, created.major, created.minor, true);
    if (!table) return toDeviceInfo(created, this.binding.constants);
    try {
      await this.loadTable({ name }, table, options.readOnly ? constants.DM_READONLY_FLAG : 0);
      return await this.resume(name, { udevFlags: options.udevFlags });
    } catch (error) {
      await this.remove(name, { retry: true }).catch(() => undefined);
      throw error;
    }
  }

  /** DM_TABLE_LOAD: puts a table in the device's inactive slot; `resume` makes it live. */
  async load(ref: DeviceRef, table: readonly TargetLine[] | string, options: { readOnly?: boolean } = {}): Promise<DeviceInfo> {
    const nativeRef = toNativeRef(ref);
    const lines = checkedTable(table);
    return toDeviceInfo(await this.loadTable(nativeRef, lines, options.readOnly ? this.binding.constants.DM_READONLY_FLAG : 0), this.binding.constants);
  }

  /** DM_TABLE_CLEAR: drops the inactive table. */
  async clear(ref: DeviceRef): Promise<DeviceInfo> {
    const nativeRef = toNativeRef(ref);
    return toDeviceInfo(await this.call(() => this.control.clear(nativeRef)), this.binding.constants);
  }

  /**
   * DM_DEV_SUSPEND: suspends the device. By default it flushes queued I/O and freezes a
   * filesystem mounted on it (what makes a snapshot consistent).
   */
  async suspend(ref: DeviceRef, options: SuspendOptions = {}): Promise<DeviceInfo> {
    const nativeRef = toNativeRef(ref);
    const flags = suspendFlags(options, this.binding.constants);
    return toDeviceInfo(await this.call(() => this.control.suspend(nativeRef, flags)), this.binding.constants);
  }

  /** DM_DEV_SUSPEND without the suspend flag: resumes, making an inactive table live. */
  async resume(ref: DeviceRef, options: ResumeOptions = {}): Promise<DeviceInfo> {
    const nativeRef = toNativeRef(ref);
    const flags = suspendFlags(options, this.binding.constants);
    const { info, udevSynced } = await this.nodes.withCookie(
      options.udevFlags ?? 0,
      (eventNr) => this.call(() => this.control.resume(nativeRef, flags, eventNr)),
      options.batch,
    );
    if (options.batch) options.batch.ensureNodeLater(info.name, info.major, info.minor);
    else await this.nodes.ensureNode(info.name, info.major, info.minor, udevSynced);
    return toDeviceInfo(info, this.binding.constants);
  }

  /** The freeze of one snapshot: freezeGroup with one member. */
  async freeze(origin: DeviceRef, snapshot: DeviceRef, options: FreezeOptions): Promise<FreezeOutcome<DeviceInfo>> {
    const { freezeMs, memoryLock, members } = await this.freezeGroup([{ origin, snapshot, originTableLoaded: options.originTableLoaded === true }], options);
    return { freezeMs, memoryLock, ...members[0] };
  }

  /**
   * The freeze of 1 to 16 origins, each with a new snapshot, in one native call on a thread
   * of its own with memory locked: suspends every origin in order (flushing and freezing
   * its filesystem), resumes every snapshot, then every origin (see lib/dm/freeze.ts: the
   * udev cookie, and what a failed step leaves: `freezeStep`, `freezeMember`, `freezeMembers`).
   */
  freezeGroup(members: readonly GroupFreezeMember<DeviceRef>[], options: FreezeOptions): Promise<GroupFreezeOutcome<DeviceInfo>> {
    return this.call(() => runFreeze(this.control, this.binding.constants, members, options));
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
    const nativeRef = toNativeRef(ref);
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
        return { ...toDeviceInfo(before, this.binding.constants), deferredRemove: deferred };
      } catch (error) {
        if (!(error instanceof DmError && error.code === 'EBUSY') || attempt >= attempts) throw error;
        await sleep(REMOVE_RETRY_DELAY_MS);
      }
    }
  }

  /** DM_DEV_RENAME: gives the device a new name. */
  async rename(ref: DeviceRef, newName: string): Promise<DeviceInfo> {
    const nativeRef = toNativeRef(ref);
    checkDeviceName(newName, 'newName');
    const before = await this.call(() => this.control.info(nativeRef, 0));
    const { info, udevSynced } = await this.nodes.withCookie(0, (eventNr) =>
      this.call(() => this.control.rename(nativeRef, newName, 0, eventNr)),
    );
    await this.nodes.removeNode(before.name, udevSynced, before);
    await this.nodes.ensureNode(newName, info.major, info.minor, udevSynced);
    return toDeviceInfo({ ...info, name: newName }, this.binding.constants);
  }

  /** DM_DEV_RENAME with DM_UUID_FLAG: sets the uuid of a device that has none (a uuid never changes). */
  async setUuid(ref: DeviceRef, uuid: string): Promise<DeviceInfo> {
    const nativeRef = toNativeRef(ref);
    checkDeviceUuid(uuid);
    const { info } = await this.nodes.withCookie(0, (eventNr) =>
      this.call(() => this.control.rename(nativeRef, uuid, this.binding.constants.DM_UUID_FLAG, eventNr)),
    );
    return toDeviceInfo({ ...info, uuid }, this.binding.constants);
  }

  /** DM_DEV_STATUS: the device's state. Fails with ENXIO if it does not exist. */
  async info(ref: DeviceRef, options: { inactive?: boolean } = {}): Promise<DeviceInfo> {
    const nativeRef = toNativeRef(ref);
    const flags = options.inactive ? this.binding.constants.DM_QUERY_INACTIVE_TABLE_FLAG : 0;
    return toDeviceInfo(await this.call(() => this.control.info(nativeRef, flags)), this.binding.constants);
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
    const nativeRef = toNativeRef(ref);
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
    const nativeRef = toNativeRef(ref);
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
    const nativeRef = toNativeRef(ref);
    const flags = options.inactive ? this.binding.constants.DM_QUERY_INACTIVE_TABLE_FLAG : 0;
    const { devices } = await this.call(() => this.control.deps(nativeRef, flags));
    return devices.map(([major, minor]) => ({ major, minor }));
  }

  /** DM_TARGET_MSG: sends a message to the target at `sector`; returns its reply, if any. */
  async message(ref: DeviceRef, sector: number, message: string): Promise<string | null> {
    const nativeRef = toNativeRef(ref);
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
    const nativeRef = toNativeRef(ref);
    if (eventNr !== undefined) checkInteger(eventNr, 'eventNr', 0, 0xffffffff);
    const info = await waitForEvent(this.binding, this.control, (op) => this.call(op), nativeRef, eventNr, options);
    return toDeviceInfo(info, this.binding.constants);
  }

  /** Closes the control node; calls already in flight still complete. */
  close(): void {
    this.control.close();
  }

  /** Closes the control node, for `using dm = await DeviceMapper.open()`. */
  [Symbol.dispose](): void {
    this.close();
  }

  private loadTable(ref: NativeDeviceRef, table: TargetLine[], flags: number): Promise<NativeDeviceInfo> {
    return loadTable((op) => this.call(op), this.control, this.binding.constants, ref, table, flags);
  }

  private call<T>(op: () => Promise<T>): Promise<T> {
    if (this.control.closed) {
      return Promise.reject(new DmsnapError(`the device-mapper client for ${this.control.path} is closed`, 'ERR_DMSNAP_CLOSED'));
    }
    return callNative(op);
  }

}


export type { Sectors };
