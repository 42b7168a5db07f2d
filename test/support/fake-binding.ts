/**
 * An in-memory stand-in for the native addon, for unit tests of the TypeScript layer.
 * It models the kernel's device-mapper (drivers/md/dm-ioctl.c, dm-table.c, dm-snap.c as
 * of Linux 6.1) and fails the way the kernel does (same errno values, through the same
 * error factory), so the shared suites run unchanged against it and against the real
 * addon in the VM.
 */
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  loadBinding,
  makeSyscallError,
  type NativeBinding,
  type NativeBlockDevice,
  type NativeBlockDeviceInfo,
  type NativeControl,
  type NativeDeviceInfo,
  type NativeDeviceRef,
  type NativeListEntry,
  type NativeSignature,
  type NativeTarget,
  type NativeTargetVersion,
  type NativeUdevCookie,
} from '../../lib/native';
import { fakeFreeze } from './fake-freeze';

export interface FakeBlockDevice extends NativeBlockDeviceInfo {}

/** A uevent the kernel sent for a dm device. `cookie` is the DM_COOKIE value (0: none). */
export interface FakeUevent {
  action: 'add' | 'change' | 'remove';
  name: string;
  minor: number;
  cookie: number;
}

/** One target of a loaded table, as it was loaded. */
export interface FakeTableTarget {
  readonly start: number;
  readonly length: number;
  readonly type: string;
  readonly params: string;
}

export interface FakeTable {
  readonly readOnly: boolean;
  readonly targets: readonly FakeTableTarget[];
}

/** What tests may inspect of a dm device (read-only: change it through the binding). */
export interface FakeMappedDevice {
  readonly name: string;
  readonly uuid: string;
  readonly major: number;
  readonly minor: number;
  readonly eventNr: number;
  readonly suspended: boolean;
  readonly deferredRemove: boolean;
  /** Whether its gendisk exists: the kernel adds it at the first table load. */
  readonly hasDisk: boolean;
  readonly live?: FakeTable;
  readonly inactive?: FakeTable;
}

/**
 * A target's reply to DM_TARGET_MSG: a string (sent back with DM_DATA_OUT_FLAG), null
 * (accepted, no reply) or { errno } to fail the ioctl.
 */
export type FakeMessageHandler = (argv: string[], target: FakeTableTarget) => string | null | { errno: number };

export interface FakeSystem {
  binding: NativeBinding;
  /** Whether /dev/mapper/control "exists" (dm-mod loaded). */
  dmLoaded: boolean;
  /** Pretend the caller is not root: opening the control node and devices, and every ioctl, fail with EACCES. */
  unprivileged: boolean;
  /** DM_VERSION. Below 4.45 (Linux 5.10 has 4.43.0) DM_LIST_DEVICES does not report uuids. */
  driverVersion: [number, number, number];
  blockDevices: Map<string, FakeBlockDevice>;
  /** Other paths that exist but are not block devices. */
  otherFiles: Set<string>;
  /**
   * What probeSignatures (libblkid) finds, by path: a block device without an entry is
   * blank, but for the DM_snapshot_cow header of persistent snapshot metadata, which is
   * added as the kernel leaves it (and gone once zeroDevice forgets it). A path with an
   * entry but no block device stands for an image file.
   */
  signatures: Map<string, NativeSignature[]>;
  /** Number of control descriptors currently open. */
  openControls: number;

  /** The addon's real constants (DM_*_FLAG, DM_NAME_LEN, …). */
  readonly constants: Readonly<Record<string, number>>;
  /** Every dm device by name. */
  readonly devices: ReadonlyMap<string, FakeMappedDevice>;
  /** Every uevent sent for a dm device, oldest first. */
  uevents: FakeUevent[];
  /** When true, udev answers each uevent with a cookie by decrementing its semaphore (95-dm-notify.rules). */
  udevRunning: boolean;
  /** Live SysV semaphores of udev cookies: semid → value. */
  semaphores: Map<number, number>;
  /** Block device nodes made by makeBlockNode. */
  nodes: Map<string, { major: number; minor: number; mode: number }>;
  /** Handlers for DM_TARGET_MSG by target type; types without one refuse messages (EINVAL), as snapshot does. */
  messageHandlers: Map<string, FakeMessageHandler>;
  /**
   * The errno DM_TABLE_LOAD gives when a table names a path that is not a block device.
   * Linux 6.1 turns every failed lookup into ENODEV (19); newer kernels pass on the
   * lookup's own error (ENOENT, ENOTBLK): set null for those.
   */
  tableDeviceLookupErrno: number | null;
  /** The kernel's global device-mapper event counter (what DM_DEV_ARM_POLL waits on). */
  readonly globalEventNr: number;

  /** Adds a loop device (major 7, the next free minor) of the given size; returns its path. */
  addLoopDevice(sizeBytes: number, options?: { logicalSectorSize?: number; readOnly?: boolean }): string;
  /**
   * Writes `sectors` sectors at `startSector` through a snapshot-origin: names either the
   * origin dm device or the device under it. Every active snapshot of that origin copies
   * the chunks it has not copied yet; a snapshot whose COW fills up becomes Invalid and
   * its device gets an event.
   */
  writeOrigin(nameOrPath: string, sectors: number, startSector?: number): void;
  /** Writes to a snapshot device itself (its chunks move to the COW; a full COW invalidates it, or with PO overflows it). */
  writeSnapshot(nameOrPath: string, sectors: number, startSector?: number): void;
  /**
   * Opens a block device as a program would (exclusive: as a mount does); returns the
   * close function. An open dm device cannot be removed (EBUSY).
   */
  openBlockDevice(nameOrPath: string, options?: { exclusive?: boolean }): () => void;
  /** Forgets the snapshot metadata at the start of a device, as zeroing its first chunk does. */
  zeroDevice(nameOrPath: string): void;
  /** Resolves once the fake's deferred work (udev replies, deferred removals) has run. */
  settle(): Promise<void>;
  /** Filesystems "mounted" through the binding: target → source. */
  mounts: Map<string, string>;
  /** Bytes zeroed through an open block device's zeroStart, per path it was opened by. */
  zeroed: Map<string, number>;
  /** Guardians started and not yet finished. */
  guardians: number;
  /**
   * Exclusive opens made while a guardian was being spawned: a half-spawned child holds
   * copies of every descriptor open then, so the kernel may answer EBUSY to the next one.
   */
  exclusiveOpensDuringSpawn: number;
}

const EPERM = 1;
const ENOENT = 2;
const ENXIO = 6;
const EBADF = 9;
const EAGAIN = 11;
const EACCES = 13;
const ENOTBLK = 15;
const EBUSY = 16;
const EEXIST = 17;
const ENODEV = 19;
const EINVAL = 22;
const EIDRM = 43;
const EOVERFLOW = 75;

/** The dynamic major the kernel gives device-mapper on Debian. */
const DM_MAJOR = 254;
const LOOP_MAJOR = 7;
const MINOR_BITS = 20;

/** What the Debian 6.1 kernel lists with dm-mod, dm-snapshot and dm-zero loaded, newest registration first. */
const TARGET_VERSIONS: NativeTargetVersion[] = [
  { name: 'snapshot-merge', version: [1, 5, 0] },
  { name: 'snapshot-origin', version: [1, 9, 0] },
  { name: 'snapshot', version: [1, 16, 0] },
  { name: 'zero', version: [1, 1, 0] },
  { name: 'striped', version: [1, 6, 0] },
  { name: 'linear', version: [1, 4, 0] },
  { name: 'error', version: [1, 5, 0] },
];

const MODE_READ = 1;
const MODE_WRITE = 2;

/** A kernel failure inside an ioctl; the control turns it into the addon's error. */
class KernelError extends Error {
  constructor(readonly errno: number) {
    super(`errno ${errno}`);
  }
}

function refuse(errno: number): never {
  throw new KernelError(errno);
}

interface DevNumber {
  key: string;
  major: number;
  minor: number;
}

/** The state of an exception store: on the COW device for P, in memory for N. */
interface SnapshotStore {
  persistent: boolean;
  chunkSize: number;
  /** Next free chunk (persistent) or sector (transient) on the COW. */
  nextFree: number;
  /** Origin chunks already copied. */
  exceptions: Set<number>;
  valid: boolean;
}

type Mapping =
  | { kind: 'linear'; dev: DevNumber; offset: number }
  | { kind: 'striped'; chunk: number; stripes: { dev: DevNumber; offset: number }[] }
  | { kind: 'origin'; dev: DevNumber }
  | { kind: 'none' }
  | SnapshotMapping;

interface SnapshotMapping {
  kind: 'snapshot';
  merge: boolean;
  origin: DevNumber;
  cow: DevNumber;
  /** PO: a full COW overflows (writes to the snapshot fail) instead of invalidating it. */
  overflowOption: boolean;
  overflowed: boolean;
  zeroesCow: boolean;
  passdownOrigin: boolean;
  store: SnapshotStore;
  /** The active snapshot whose exceptions this one takes over when resumed. */
  handoverFrom?: LoadedTarget;
  active: boolean;
}

interface LoadedTarget extends FakeTableTarget {
  mapping: Mapping;
  table: LoadedTable;
}

interface LoadedTable extends FakeTable {
  readonly targets: LoadedTarget[];
  /** The devices the table holds open, in the order first used, with the mode of the open. */
  devices: Map<string, { dev: DevNumber; mode: number }>;
  md: MappedDevice;
  size: number;
}

interface MappedDevice extends FakeMappedDevice {
  name: string;
  uuid: string;
  minor: number;
  eventNr: number;
  suspended: boolean;
  deferredRemove: boolean;
  hasDisk: boolean;
  diskReadOnly: boolean;
  live?: LoadedTable;
  inactive?: LoadedTable;
  removed: boolean;
}

interface ControlState {
  path: string;
  closed: boolean;
  armed: number;
  polls: ((readable: boolean) => void)[];
}

/** Copies a string into a fixed-size C field the way the addon does (truncating bytes). */
function field(value: string, size: number): string {
  const bytes = Buffer.from(value, 'utf8');
  return bytes.length <= size - 1 ? value : bytes.subarray(0, size - 1).toString('utf8');
}

function byteLength(value: string): number {
  return Buffer.byteLength(value, 'utf8');
}

const isSpace = (ch: string) => ch === ' ' || (ch >= '\t' && ch <= '\r');

/** dm_split_args: whitespace-separated words, backslash quoting any character. */
function splitArgs(input: string): string[] {
  const argv: string[] = [];
  let i = 0;
  for (;;) {
    while (i < input.length && isSpace(input[i]!)) i++;
    if (i >= input.length) break;
    let word = '';
    while (i < input.length) {
      const ch = input[i]!;
      if (ch === '\\' && i + 1 < input.length) {
        word += input[i + 1];
        i += 2;
        continue;
      }
      if (isSpace(ch)) break;
      word += ch;
      i++;
    }
    if (i < input.length) i++;
    argv.push(word);
  }
  return argv;
}

/** sscanf("%llu%c") == 1 and kstrtouint-style numbers: digits only. */
function parseUnsigned(text: string | undefined, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (text === undefined || !/^\d+$/.test(text)) return undefined;
  const value = Number(text);
  return value <= max ? value : undefined;
}

const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;

export function createFakeSystem(): FakeSystem {
  const constants = loadBinding().constants;
  const flag = (name: string): number => {
    const value = constants[name];
    if (typeof value !== 'number') throw new Error(`the native addon does not define ${name}`);
    return value;
  };
  const READONLY = flag('DM_READONLY_FLAG');
  const SUSPEND = flag('DM_SUSPEND_FLAG');
  const PERSISTENT_DEV = flag('DM_PERSISTENT_DEV_FLAG');
  const STATUS_TABLE = flag('DM_STATUS_TABLE_FLAG');
  const ACTIVE_PRESENT = flag('DM_ACTIVE_PRESENT_FLAG');
  const INACTIVE_PRESENT = flag('DM_INACTIVE_PRESENT_FLAG');
  const BUFFER_FULL = flag('DM_BUFFER_FULL_FLAG');
  const QUERY_INACTIVE = flag('DM_QUERY_INACTIVE_TABLE_FLAG');
  const UEVENT_GENERATED = flag('DM_UEVENT_GENERATED_FLAG');
  const UUID_FLAG = flag('DM_UUID_FLAG');
  const SECURE_DATA = flag('DM_SECURE_DATA_FLAG');
  const DATA_OUT = flag('DM_DATA_OUT_FLAG');
  const DEFERRED_REMOVE = flag('DM_DEFERRED_REMOVE');
  const INTERNAL_SUSPEND = flag('DM_INTERNAL_SUSPEND_FLAG');
  const NAME_LEN = flag('DM_NAME_LEN');
  const UUID_LEN = flag('DM_UUID_LEN');
  const MAX_TYPE_NAME = flag('DM_MAX_TYPE_NAME');

  const mds = new Map<string, MappedDevice>();
  const controls = new Set<ControlState>();
  const waiters: { md: MappedDevice; eventNr: number; wake: () => void }[] = [];
  /** Persistent snapshot metadata by where it lives: "MAJOR:MINOR@SECTOR" of the underlying device. */
  const cowMetadata = new Map<string, SnapshotStore>();
  /** Opens by programs (not by tables): count and how many are exclusive. */
  const externalOpens = new Map<string, { count: number; exclusive: number }>();
  const mountClosers = new Map<string, () => void>();
  const cookieBases = new Map<number, number>();
  const cookieWaiters = new Map<number, { done: (result: boolean | Error) => void }[]>();
  let globalEventNr = 0;
  let deferredScheduled = false;
  let nextSemid = 32768;
  let nextCookieBase = 1;
  /** Guardian spawns in flight. */
  let spawning = 0;

  const system: FakeSystem = {
    dmLoaded: true,
    unprivileged: false,
    driverVersion: [4, 47, 0],
    blockDevices: new Map(),
    otherFiles: new Set(['/dev/null', '/etc/passwd']),
    signatures: new Map(),
    openControls: 0,
    binding: undefined as unknown as NativeBinding,
    constants,
    devices: mds,
    uevents: [],
    udevRunning: false,
    semaphores: new Map(),
    nodes: new Map(),
    messageHandlers: new Map(),
    tableDeviceLookupErrno: ENODEV,
    get globalEventNr() {
      return globalEventNr;
    },
    addLoopDevice,
    writeOrigin,
    writeSnapshot,
    openBlockDevice,
    zeroDevice,
    settle,
    mounts: new Map(),
    zeroed: new Map(),
    guardians: 0,
    exclusiveOpensDuringSpawn: 0,
  };

  // ---- block devices -------------------------------------------------------------

  const keyOf = (major: number, minor: number) => `${major}:${minor}`;
  const dmKey = (md: MappedDevice) => keyOf(DM_MAJOR, md.minor);

  function mdByMinor(minor: number): MappedDevice | undefined {
    for (const md of mds.values()) if (md.minor === minor) return md;
    return undefined;
  }

  function mdByUuid(uuid: string): MappedDevice | undefined {
    for (const md of mds.values()) if (md.uuid && md.uuid === uuid) return md;
    return undefined;
  }

  function loopByNumber(major: number, minor: number): FakeBlockDevice | undefined {
    for (const device of system.blockDevices.values()) if (device.major === major && device.minor === minor) return device;
    return undefined;
  }

  /** The paths a program sees: block devices, nodes made by mknod, and other files. */
  function lookupPath(path: string): DevNumber | 'other' | undefined {
    const device = system.blockDevices.get(path);
    if (device) return { key: keyOf(device.major, device.minor), major: device.major, minor: device.minor };
    const node = system.nodes.get(path);
    if (node) return { key: keyOf(node.major, node.minor), major: node.major, minor: node.minor };
    if (system.otherFiles.has(path) || (system.dmLoaded && path === '/dev/mapper/control')) return 'other';
    return undefined;
  }

  /** Also /dev/mapper/NAME (as udev makes it) and /dev/dm-N (devtmpfs) once the disk exists. */
  function lookupDevicePath(path: string): DevNumber | 'other' | undefined {
    const found = lookupPath(path);
    if (found) return found;
    const mapper = /^\/dev\/mapper\/(.+)$/.exec(path);
    const numbered = /^\/dev\/dm-(\d+)$/.exec(path);
    const md = mapper ? mds.get(mapper[1]!) : numbered ? mdByMinor(Number(numbered[1])) : undefined;
    return md?.hasDisk ? { key: dmKey(md), major: DM_MAJOR, minor: md.minor } : undefined;
  }

  /** Whether a device number can be opened: an attached loop device or a dm device with a disk. */
  function openable(dev: DevNumber): boolean {
    if (loopByNumber(dev.major, dev.minor)) return true;
    if (dev.major !== DM_MAJOR) return false;
    const md = mdByMinor(dev.minor);
    return !!md && md.hasDisk && !md.removed;
  }

  /** Size in sectors; a dm device is as large as its live table. */
  function sizeOf(dev: DevNumber): number {
    const loop = loopByNumber(dev.major, dev.minor);
    if (loop) return Math.floor(loop.sizeBytes / 512);
    const md = dev.major === DM_MAJOR ? mdByMinor(dev.minor) : undefined;
    return md?.live?.size ?? 0;
  }

  function logicalSectors(dev: DevNumber): number {
    const loop = loopByNumber(dev.major, dev.minor);
    return loop ? Math.max(1, loop.logicalSectorSize / 512) : 1;
  }

  /** Where a sector of a device really lives: follows linear dm tables down to a disk. */
  function storageKey(dev: DevNumber, sector = 0): string {
    const md = dev.major === DM_MAJOR ? mdByMinor(dev.minor) : undefined;
    const target = md?.live?.targets.find((t) => sector >= t.start && sector < t.start + t.length);
    if (target?.mapping.kind === 'linear') {
      return storageKey(target.mapping.dev, target.mapping.offset + (sector - target.start));
    }
    return `${dev.key}@${sector}`;
  }

  /** A device named by a dm name, a path, or "MAJOR:MINOR", for the test helpers. */
  function resolveForTest(nameOrPath: string): DevNumber {
    const md = mds.get(nameOrPath);
    if (md) return { key: dmKey(md), major: DM_MAJOR, minor: md.minor };
    const number = /^(\d+):(\d+)$/.exec(nameOrPath);
    const found = number
      ? { key: nameOrPath, major: Number(number[1]), minor: Number(number[2]) }
      : lookupDevicePath(nameOrPath);
    if (!found || found === 'other' || !openable(found)) throw new Error(`fake: no block device ${nameOrPath}`);
    return found;
  }

  // ---- events ----------------------------------------------------------------------

  function issueGlobalEvent(): void {
    globalEventNr++;
    for (const control of controls) {
      if (globalEventNr - control.armed > 0 && control.polls.length > 0) {
        const polls = control.polls.splice(0);
        for (const done of polls) done(true);
      }
    }
  }

  /** dm_table_event: the device's event counter moves and waiters wake. */
  function tableEvent(md: MappedDevice): void {
    md.eventNr = (md.eventNr + 1) >>> 0;
    for (const waiter of [...waiters]) {
      if (waiter.md === md && waiter.eventNr !== md.eventNr) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.wake();
      }
    }
    issueGlobalEvent();
  }

  function recordUevent(md: MappedDevice, action: FakeUevent['action'], cookie: number): void {
    system.uevents.push({ action, name: md.name, minor: md.minor, cookie });
    if (system.udevRunning && cookie !== 0) setImmediate(() => udevComplete(cookie & 0xffff));
  }

  /**
   * dm_kobject_uevent: fails (no DM_UEVENT_GENERATED_FLAG) for a device whose disk was
   * never added, because its kobject has no name yet.
   */
  function dmUevent(md: MappedDevice, action: FakeUevent['action'], cookie: number): boolean {
    if (!md.hasDisk) return false;
    recordUevent(md, action, cookie);
    return true;
  }

  /** `dmsetup udevcomplete COOKIE` run by udev: decrements the cookie's semaphore. */
  function udevComplete(base: number): void {
    for (const [semid, semBase] of cookieBases) {
      if (semBase !== base) continue;
      const value = system.semaphores.get(semid);
      if (value !== undefined && value > 0) {
        system.semaphores.set(semid, value - 1);
        checkCookie(semid);
      }
    }
  }

  // ---- open counts and removal ---------------------------------------------------------

  /** dm_open_count of a device: one open per (holding dm device, mode), plus programs' opens. */
  function openCount(key: string): number {
    let count = externalOpens.get(key)?.count ?? 0;
    for (const md of mds.values()) {
      const modes = new Set<number>();
      for (const table of [md.live, md.inactive]) {
        const held = table?.devices.get(key);
        if (held) modes.add(held.mode);
      }
      count += modes.size;
    }
    return count;
  }

  /** Whether any table holds the device (dm claims it with one shared holder). */
  function claimedByTables(key: string): boolean {
    for (const md of mds.values()) if (md.live?.devices.has(key) || md.inactive?.devices.has(key)) return true;
    return false;
  }

  /** __hash_remove and dm_destroy: unhash, wake waiters, drop the tables, delete the disk. */
  function destroyDevice(md: MappedDevice): void {
    mds.delete(md.name);
    md.removed = true;
    if (md.live) tableEvent(md);
    for (const waiter of [...waiters]) {
      if (waiter.md === md) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.wake();
      }
    }
    md.inactive = undefined;
    md.live = undefined;
    for (const key of cowMetadata.keys()) if (key.startsWith(`${dmKey(md)}@`)) cowMetadata.delete(key);
  }

  /** dm_deferred_remove: runs on a workqueue once the last opener of a marked device closes. */
  function scheduleDeferredRemovals(): void {
    if (deferredScheduled) return;
    const due = () => [...mds.values()].some((md) => md.deferredRemove && openCount(dmKey(md)) === 0);
    if (!due()) return;
    deferredScheduled = true;
    setImmediate(() => {
      deferredScheduled = false;
      for (;;) {
        const md = [...mds.values()].find((m) => m.deferredRemove && openCount(dmKey(m)) === 0);
        if (!md) break;
        destroyDevice(md);
        if (md.hasDisk) recordUevent(md, 'remove', 0);
      }
    });
  }

  // ---- tables ------------------------------------------------------------------------

  /** dm_get_device: resolves a table's device argument and opens it for the table. */
  function getDevice(table: LoadedTable, arg: string, mode: number): DevNumber {
    let dev: DevNumber;
    const number = /^(\d+):(\d+)$/.exec(arg);
    if (number) {
      const major = Number(number[1]);
      const minor = Number(number[2]);
      if (major >= 1 << 12 || minor >= 1 << MINOR_BITS) refuse(EOVERFLOW);
      dev = { key: keyOf(major, minor), major, minor };
    } else {
      const found = lookupDevicePath(arg);
      if (!found) refuse(system.tableDeviceLookupErrno ?? ENOENT);
      if (found === 'other') refuse(system.tableDeviceLookupErrno ?? ENOTBLK);
      dev = found as DevNumber;
    }
    if (dev.key === dmKey(table.md)) refuse(EINVAL);
    const held = table.devices.get(dev.key);
    if (held) {
      held.mode |= mode;
      return held.dev;
    }
    if (!openable(dev)) refuse(ENXIO);
    // Programs holding it exclusively (a mount) keep dm's claim out.
    if ((externalOpens.get(dev.key)?.exclusive ?? 0) > 0) refuse(EBUSY);
    table.devices.set(dev.key, { dev, mode });
    return dev;
  }

  /** Snapshots registered on an origin: every snapshot target in any table, plus those being built. */
  function snapshotTargets(extra: LoadedTarget[] = []): LoadedTarget[] {
    const found: LoadedTarget[] = [];
    for (const md of mds.values()) {
      for (const table of [md.live, md.inactive]) {
        for (const target of table?.targets ?? []) if (target.mapping.kind === 'snapshot') found.push(target);
      }
    }
    for (const target of extra) if (target.mapping.kind === 'snapshot') found.push(target);
    return found;
  }

  const sharesCow = (a: SnapshotMapping, b: SnapshotMapping) => a.origin.key === b.origin.key && a.cow.key === b.cow.key;

  function constructSnapshot(table: LoadedTable, argv: string[], merge: boolean): SnapshotMapping {
    if (argv.length < 4) refuse(EINVAL);
    let zeroesCow = false;
    let passdownOrigin = false;
    const features = argv.slice(4);
    if (features.length > 0) {
      const count = parseUnsigned(features[0], 0xffffffff);
      if (count === undefined || count > 2 || features.length - 1 < count) refuse(EINVAL);
      for (const name of features.slice(1, 1 + count!)) {
        if (name.toLowerCase() === 'discard_zeroes_cow') zeroesCow = true;
        else if (name.toLowerCase() === 'discard_passdown_origin') passdownOrigin = true;
        else refuse(EINVAL);
      }
      if (passdownOrigin && !zeroesCow) refuse(EINVAL);
    }
    const origin = getDevice(table, argv[0]!, merge ? MODE_WRITE : MODE_READ);
    const cow = getDevice(table, argv[1]!, table.readOnly ? MODE_READ : MODE_READ | MODE_WRITE);
    if (cow.key === origin.key) refuse(EINVAL);

    // dm_exception_store_create: P or N (any case), then the chunk size.
    const storeType = argv[2]!.toUpperCase();
    if (storeType[0] !== 'P' && storeType[0] !== 'N') refuse(EINVAL);
    const persistent = storeType[0] === 'P';
    const chunk = parseUnsigned(argv[3], 0xffffffff);
    if (chunk === undefined) refuse(EINVAL);
    if (chunk !== 0) {
      if (!isPowerOfTwo(chunk!) || chunk! % logicalSectors(cow) !== 0 || chunk! % logicalSectors(origin) !== 0) refuse(EINVAL);
      if (chunk! > 0x7fffffff >> 9) refuse(EINVAL);
    }
    let overflowOption = false;
    if (persistent && storeType.length > 1) {
      if (storeType[1] === 'O') overflowOption = true;
      else refuse(EINVAL);
    }

    const mapping: SnapshotMapping = {
      kind: 'snapshot',
      merge,
      origin,
      cow,
      overflowOption,
      overflowed: false,
      zeroesCow,
      passdownOrigin,
      store: undefined as unknown as SnapshotStore,
      active: false,
    };

    // register_snapshot: another snapshot on the same origin and COW means a handover
    // from the active one; an inactive one, or two, cannot be paired.
    const sharing = snapshotTargets(table.targets).filter((t) => sharesCow(t.mapping as SnapshotMapping, mapping));
    const active = sharing.filter((t) => (t.mapping as SnapshotMapping).active);
    if (sharing.length >= 2 || sharing.length > active.length) refuse(EINVAL);
    if (active.length === 1) {
      mapping.handoverFrom = active[0]!;
      mapping.store = (active[0]!.mapping as SnapshotMapping).store;
      return mapping;
    }

    if (persistent) {
      // read_metadata: a zeroed header means a new snapshot, whose header is written now.
      const where = storageKey(cow);
      let store = cowMetadata.get(where);
      if (!store) {
        store = { persistent: true, chunkSize: chunk || Math.max(8, logicalSectors(cow)), nextFree: 2, exceptions: new Set(), valid: true };
        cowMetadata.set(where, store);
      }
      mapping.store = store;
    } else {
      if (chunk === 0) refuse(EINVAL);
      mapping.store = { persistent: false, chunkSize: chunk!, nextFree: 0, exceptions: new Set(), valid: true };
    }
    return mapping;
  }

  /** dm_table_add_target for each line, then the constructors of the targets. */
  function buildTable(md: MappedDevice, specs: NativeTarget[], readOnly: boolean): LoadedTable {
    const table: LoadedTable = { readOnly, targets: [], devices: new Map(), md, size: 0 };
    if (specs.length === 0) refuse(EINVAL);
    const tableMode = readOnly ? MODE_READ : MODE_READ | MODE_WRITE;
    for (const spec of specs) {
      const type = field(spec.type, MAX_TYPE_NAME);
      if (spec.length === 0) refuse(EINVAL);
      if (!TARGET_VERSIONS.some((v) => v.name === type)) refuse(EINVAL);
      if (spec.start !== table.size) refuse(EINVAL); // "Gap in table"
      const argv = splitArgs(spec.params);
      const target: LoadedTarget = { start: spec.start, length: spec.length, type, params: spec.params, mapping: { kind: 'none' }, table };
      switch (type) {
        case 'linear': {
          if (argv.length !== 2) refuse(EINVAL);
          const offset = parseUnsigned(argv[1]);
          if (offset === undefined) refuse(EINVAL);
          target.mapping = { kind: 'linear', dev: getDevice(table, argv[0]!, tableMode), offset: offset! };
          break;
        }
        case 'striped': {
          if (argv.length < 2) refuse(EINVAL);
          const stripes = parseUnsigned(argv[0], 0xffffffff);
          const chunk = parseUnsigned(argv[1], 0xffffffff);
          if (!stripes || !chunk) refuse(EINVAL);
          if (spec.length % stripes! !== 0 || (spec.length / stripes!) % chunk! !== 0) refuse(EINVAL);
          if (argv.length !== 2 + 2 * stripes!) refuse(EINVAL);
          const list: { dev: DevNumber; offset: number }[] = [];
          for (let i = 0; i < stripes!; i++) {
            const offset = parseUnsigned(argv[3 + 2 * i]);
            if (offset === undefined) refuse(EINVAL);
            list.push({ dev: getDevice(table, argv[2 + 2 * i]!, tableMode), offset: offset! });
          }
          target.mapping = { kind: 'striped', chunk: chunk!, stripes: list };
          break;
        }
        case 'snapshot-origin':
          if (argv.length !== 1) refuse(EINVAL);
          target.mapping = { kind: 'origin', dev: getDevice(table, argv[0]!, tableMode) };
          break;
        case 'snapshot':
        case 'snapshot-merge':
          target.mapping = constructSnapshot(table, argv, type === 'snapshot-merge');
          break;
        case 'zero':
          if (argv.length !== 0) refuse(EINVAL);
          break;
        default: // error: takes any arguments
          break;
      }
      table.targets.push(target);
      table.size += spec.length;
    }
    return table;
  }

  /** The device areas a target uses, for device_area_is_invalid. */
  function areas(target: LoadedTarget): { dev: DevNumber; start: number; length: number }[] {
    const m = target.mapping;
    switch (m.kind) {
      case 'linear':
        return [{ dev: m.dev, start: m.offset, length: target.length }];
      case 'striped':
        return m.stripes.map((s) => ({ dev: s.dev, start: s.offset, length: target.length / m.stripes.length }));
      case 'origin':
        return [{ dev: m.dev, start: 0, length: target.length }];
      case 'snapshot':
        return [
          { dev: m.origin, start: 0, length: target.length },
          { dev: m.cow, start: 0, length: sizeOf(m.cow) },
        ];
      default:
        return [];
    }
  }

  /** dm_calculate_queue_limits: every area must lie inside its device, aligned to its block size. */
  function areasInvalid(table: LoadedTable): boolean {
    for (const target of table.targets) {
      for (const area of areas(target)) {
        const size = sizeOf(area.dev);
        if (size === 0) continue;
        if (area.start >= size || area.start + area.length > size) return true;
        const block = logicalSectors(area.dev);
        if (block > 1 && (area.start % block !== 0 || area.length % block !== 0)) return true;
      }
    }
    return false;
  }

  /** The parameters as the kernel prints them (STATUSTYPE_TABLE): devices as MAJOR:MINOR. */
  function tableParams(target: LoadedTarget): string {
    const m = target.mapping;
    switch (m.kind) {
      case 'linear':
        return `${m.dev.key} ${m.offset}`;
      case 'striped':
        return `${m.stripes.length} ${m.chunk}` + m.stripes.map((s) => ` ${s.dev.key} ${s.offset}`).join('');
      case 'origin':
        return m.dev.key;
      case 'snapshot': {
        const type = m.store.persistent ? (m.overflowOption ? 'PO' : 'P') : 'N';
        const features = [m.zeroesCow ? 'discard_zeroes_cow' : '', m.passdownOrigin ? 'discard_passdown_origin' : ''].filter(Boolean);
        return `${m.origin.key} ${m.cow.key} ${type} ${m.store.chunkSize}` + (features.length ? ` ${features.length} ${features.join(' ')}` : '');
      }
      default:
        return '';
    }
  }

  /** The status text (STATUSTYPE_INFO). */
  function statusText(target: LoadedTarget): string {
    const m = target.mapping;
    if (m.kind === 'striped') return `${m.stripes.length} ` + m.stripes.map((s) => `${s.dev.key} `).join('') + '1 ' + 'A'.repeat(m.stripes.length);
    if (m.kind !== 'snapshot') return '';
    if (!m.store.valid) return 'Invalid';
    if (m.overflowed) return 'Overflow';
    const { store } = m;
    const total = sizeOf(m.cow);
    if (!store.persistent) return `${store.nextFree}/${total} 0`;
    // persistent_usage: one header chunk, then one metadata chunk per area in use.
    const perArea = (store.chunkSize * 512) / 16;
    const area = Math.floor(store.exceptions.size / perArea);
    return `${store.nextFree * store.chunkSize}/${total} ${(area + 2) * store.chunkSize}`;
  }

  /** prepare_exception: takes room on the COW for one chunk; false when it is full. */
  function allocateChunk(m: SnapshotMapping, chunk: number): boolean {
    const { store } = m;
    const size = sizeOf(m.cow);
    if (store.persistent) {
      if (size < (store.nextFree + 1) * store.chunkSize) return false;
      store.nextFree++;
      // Skip the next metadata area's chunk.
      if (store.nextFree % ((store.chunkSize * 512) / 16 + 1) === 1) store.nextFree++;
    } else {
      if (size < store.nextFree + store.chunkSize) return false;
      store.nextFree += store.chunkSize;
    }
    store.exceptions.add(chunk);
    return true;
  }

  function invalidate(target: LoadedTarget): void {
    const m = target.mapping as SnapshotMapping;
    if (!m.store.valid) return;
    m.store.valid = false;
    tableEvent(target.table.md);
  }

  function chunksOf(m: SnapshotMapping, sectors: number, start: number): { chunk: number; sector: number }[] {
    const size = m.store.chunkSize;
    const list: { chunk: number; sector: number }[] = [];
    if (sectors <= 0) return list;
    for (let chunk = Math.floor(start / size); chunk <= Math.floor((start + sectors - 1) / size); chunk++) {
      list.push({ chunk, sector: Math.max(start, chunk * size) });
    }
    return list;
  }

  // ---- the helpers for tests -----------------------------------------------------------

  function addLoopDevice(sizeBytes: number, options: { logicalSectorSize?: number; readOnly?: boolean } = {}): string {
    let minor = 0;
    while (loopByNumber(LOOP_MAJOR, minor)) minor++;
    const path = `/dev/loop${minor}`;
    system.blockDevices.set(path, {
      sizeBytes,
      logicalSectorSize: options.logicalSectorSize ?? 512,
      physicalSectorSize: options.logicalSectorSize ?? 512,
      readOnly: options.readOnly ?? false,
      major: LOOP_MAJOR,
      minor,
    });
    return path;
  }

  function writeOrigin(nameOrPath: string, sectors: number, startSector = 0): void {
    const dev = resolveForTest(nameOrPath);
    const md = dev.major === DM_MAJOR ? mdByMinor(dev.minor) : undefined;
    // Through a snapshot-origin device: each of its targets passes writes to the device under it.
    const writes: { origin: DevNumber; start: number; sectors: number }[] = [];
    for (const target of md?.live?.targets ?? []) {
      if (target.mapping.kind !== 'origin') continue;
      const from = Math.max(startSector, target.start);
      const to = Math.min(startSector + sectors, target.start + target.length);
      if (to > from) writes.push({ origin: target.mapping.dev, start: from - target.start, sectors: to - from });
    }
    if (writes.length === 0) writes.push({ origin: dev, start: startSector, sectors });
    const snapshots = snapshotTargets();
    for (const write of writes) {
      for (const target of snapshots) {
        const m = target.mapping as SnapshotMapping;
        if (m.origin.key !== write.origin.key || m.merge) continue;
        for (const { chunk, sector } of chunksOf(m, write.sectors, write.start)) {
          // __origin_write: only valid, active snapshots, and not past the snapshot's end.
          if (!m.store.valid || !m.active || sector >= target.table.size) continue;
          if (m.store.exceptions.has(chunk)) continue;
          if (!allocateChunk(m, chunk)) invalidate(target);
        }
      }
    }
  }

  function writeSnapshot(nameOrPath: string, sectors: number, startSector = 0): void {
    const dev = resolveForTest(nameOrPath);
    const md = dev.major === DM_MAJOR ? mdByMinor(dev.minor) : undefined;
    const target = md?.live?.targets.find((t) => t.mapping.kind === 'snapshot' && !(t.mapping as SnapshotMapping).merge);
    if (!target) throw new Error(`fake: ${nameOrPath} is not a snapshot device`);
    const m = target.mapping as SnapshotMapping;
    for (const { chunk } of chunksOf(m, sectors, startSector)) {
      if (!m.store.valid || m.overflowed) return;
      if (m.store.exceptions.has(chunk)) continue;
      if (!allocateChunk(m, chunk)) {
        if (m.overflowOption) m.overflowed = true;
        else invalidate(target);
      }
    }
  }

  function openBlockDevice(nameOrPath: string, options: { exclusive?: boolean } = {}): () => void {
    const dev = resolveForTest(nameOrPath);
    if (options.exclusive && claimedByTables(dev.key)) throw new Error(`fake: ${nameOrPath} is in use by device-mapper (EBUSY)`);
    const opens = externalOpens.get(dev.key) ?? { count: 0, exclusive: 0 };
    opens.count++;
    if (options.exclusive) opens.exclusive++;
    externalOpens.set(dev.key, opens);
    let open = true;
    return () => {
      if (!open) return;
      open = false;
      opens.count--;
      if (options.exclusive) opens.exclusive--;
      if (opens.count === 0) externalOpens.delete(dev.key);
      scheduleDeferredRemovals();
    };
  }

  function zeroDevice(nameOrPath: string): void {
    cowMetadata.delete(storageKey(resolveForTest(nameOrPath)));
  }

  async function settle(): Promise<void> {
    for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
  }

  // ---- the ioctls ---------------------------------------------------------------------

  /** validate_params: flags the kernel always clears on input. */
  const cleanFlags = (flags: number) => (flags & ~(BUFFER_FULL | UEVENT_GENERATED | SECURE_DATA | DATA_OUT)) >>> 0;

  /** __find_device_hash_cell: by name, else uuid, else device number; notes an inactive table. */
  function findDevice(ref: NativeDeviceRef, flags: number): { md: MappedDevice; flags: number } {
    let md: MappedDevice | undefined;
    if (ref.name) md = mds.get(field(ref.name, NAME_LEN));
    else if (ref.uuid) md = mdByUuid(field(ref.uuid, UUID_LEN));
    else if (ref.major !== undefined && ref.minor !== undefined && ref.major === DM_MAJOR) md = mdByMinor(ref.minor);
    if (!md) return refuse(ENXIO);
    return { md, flags: md.inactive ? (flags | INACTIVE_PRESENT) >>> 0 : (flags & ~INACTIVE_PRESENT) >>> 0 };
  }

  /** __dev_status: the device's state in the header, the rest of the flags as sent. */
  function devStatus(md: MappedDevice, flagsIn: number, names?: { name: string; uuid: string }): NativeDeviceInfo {
    let flags = flagsIn & ~(SUSPEND | READONLY | ACTIVE_PRESENT | INTERNAL_SUSPEND);
    if (md.suspended) flags |= SUSPEND;
    if (md.deferredRemove) flags |= DEFERRED_REMOVE;
    let targetCount = 0;
    if (md.live) {
      if (!(flags & QUERY_INACTIVE)) {
        if (md.diskReadOnly) flags |= READONLY;
        targetCount = md.live.targets.length;
      }
      flags |= ACTIVE_PRESENT;
    }
    if (flags & QUERY_INACTIVE && md.inactive) {
      if (md.inactive.readOnly) flags |= READONLY;
      targetCount = md.inactive.targets.length;
    }
    return {
      name: names?.name ?? md.name,
      uuid: names?.uuid ?? md.uuid,
      major: DM_MAJOR,
      minor: md.minor,
      openCount: openCount(dmKey(md)),
      eventNr: md.eventNr,
      targetCount,
      flags: flags >>> 0,
    };
  }

  /** The header as sent, for calls that return without __dev_status (DM_DEV_REMOVE). */
  function headerAsSent(md: MappedDevice, ref: NativeDeviceRef, flags: number, eventNr: number): NativeDeviceInfo {
    const byNumber = !ref.name && !ref.uuid && ref.major !== undefined && ref.minor !== undefined;
    return {
      name: md.name,
      uuid: md.uuid,
      major: byNumber ? ref.major! : 0,
      minor: byNumber ? ref.minor! : 0,
      openCount: 0,
      eventNr: eventNr >>> 0,
      targetCount: 0,
      flags: flags >>> 0,
    };
  }

  function destroyTable(table: LoadedTable | undefined): void {
    if (table) table.devices.clear();
    scheduleDeferredRemovals();
  }

  function create(name: string, uuid: string, flagsIn: number): NativeDeviceInfo {
    name = field(name, NAME_LEN);
    uuid = field(uuid, UUID_LEN);
    let flags = cleanFlags(flagsIn);
    if (!name || name.includes('/')) refuse(EINVAL);
    let minor = 0;
    if (flags & PERSISTENT_DEV) {
      // The addon sends no device number, so the minor asked for is 0.
      if (mdByMinor(0)) refuse(EBUSY);
    } else {
      while (mdByMinor(minor)) minor++; // idr_alloc: the lowest free minor
    }
    if (mds.has(name) || (uuid && mdByUuid(uuid))) refuse(EBUSY);
    const md: MappedDevice = {
      name,
      uuid,
      major: DM_MAJOR,
      minor,
      eventNr: 0,
      suspended: false,
      deferredRemove: false,
      hasDisk: false,
      diskReadOnly: false,
      removed: false,
    };
    mds.set(name, md);
    issueGlobalEvent();
    flags &= ~INACTIVE_PRESENT;
    return devStatus(md, flags, { name, uuid });
  }

  function remove(ref: NativeDeviceRef, flagsIn: number, eventNr: number): NativeDeviceInfo {
    const found = findDevice(ref, cleanFlags(flagsIn));
    const { md } = found;
    let { flags } = found;
    if (openCount(dmKey(md)) > 0) {
      if (!(flags & DEFERRED_REMOVE)) refuse(EBUSY);
      md.deferredRemove = true;
      issueGlobalEvent();
      return headerAsSent(md, ref, flags, eventNr);
    }
    destroyDevice(md);
    flags &= ~DEFERRED_REMOVE;
    if (dmUevent(md, 'remove', eventNr >>> 0)) flags |= UEVENT_GENERATED;
    if (md.hasDisk) recordUevent(md, 'remove', 0); // del_gendisk's own uevent
    issueGlobalEvent();
    scheduleDeferredRemovals();
    return headerAsSent(md, ref, flags, eventNr);
  }

  function rename(ref: NativeDeviceRef, newValue: string, flagsIn: number, eventNr: number): NativeDeviceInfo {
    let flags = cleanFlags(flagsIn);
    const changeUuid = (flags & UUID_FLAG) !== 0;
    if (!newValue || byteLength(newValue) > (changeUuid ? UUID_LEN : NAME_LEN) - 1) refuse(EINVAL);
    if (!changeUuid && newValue.includes('/')) refuse(EINVAL);
    if (changeUuid ? mdByUuid(newValue) : mds.has(newValue)) refuse(EBUSY);
    // dm_hash_rename looks the device up by the request's name only.
    const oldName = ref.name ? field(ref.name, NAME_LEN) : '';
    const md = mds.get(oldName);
    if (!md) return refuse(ENXIO);
    if (changeUuid && md.uuid) refuse(EINVAL);
    if (changeUuid) {
      md.uuid = newValue;
    } else {
      mds.delete(md.name);
      md.name = newValue;
      mds.set(newValue, md);
    }
    if (md.live) tableEvent(md);
    if (dmUevent(md, 'change', eventNr >>> 0)) flags |= UEVENT_GENERATED;
    issueGlobalEvent();
    // __dev_status leaves the request's name and uuid fields as they were sent.
    return devStatus(md, flags, { name: oldName, uuid: '' });
  }

  function suspend(ref: NativeDeviceRef, flagsIn: number): NativeDeviceInfo {
    const { md, flags } = findDevice(ref, cleanFlags(flagsIn | SUSPEND));
    md.suspended = true;
    return devStatus(md, flags);
  }

  function resume(ref: NativeDeviceRef, flagsIn: number, eventNr: number): NativeDeviceInfo {
    const found = findDevice(ref, cleanFlags(flagsIn & ~SUSPEND));
    const { md } = found;
    let flags = found.flags & ~INACTIVE_PRESENT;
    const newMap = md.inactive;
    md.inactive = undefined;
    let oldMap: LoadedTable | undefined;
    try {
      if (newMap) {
        md.suspended = true;
        // dm_swap_table: a table without data devices keeps the live limits.
        const keepLimits = newMap.devices.size === 0 && md.live;
        if (!keepLimits && areasInvalid(newMap)) {
          destroyTable(newMap);
          return refuse(EINVAL);
        }
        oldMap = md.live;
        md.live = newMap;
        md.diskReadOnly = newMap.readOnly;
        issueGlobalEvent();
      }
      if (md.suspended) {
        // dm_resume needs a live table with sectors in it.
        if (!md.live || md.live.size === 0) refuse(EINVAL);
        // snapshot_preresume: a handover needs its source suspended.
        for (const target of md.live!.targets) {
          const m = target.mapping;
          if (m.kind !== 'snapshot' || !m.handoverFrom) continue;
          const source = m.handoverFrom.table.md;
          if (source !== md && !source.suspended && source.live === m.handoverFrom.table) refuse(EINVAL);
        }
        md.suspended = false;
        for (const target of md.live!.targets) {
          const m = target.mapping;
          if (m.kind !== 'snapshot') continue;
          const source = m.handoverFrom?.mapping as SnapshotMapping | undefined;
          if (source) {
            // __handover_exceptions: the source keeps an empty, invalid store.
            m.overflowed = source.overflowed;
            source.store = { ...m.store, exceptions: new Set(), valid: false };
            m.handoverFrom = undefined;
          }
          m.active = true;
          if (m.merge) {
            // Merging copies every exception back to the origin; done at once here.
            m.store.exceptions.clear();
            m.store.nextFree = m.store.persistent ? 2 : 0;
          }
        }
        if (dmUevent(md, 'change', eventNr >>> 0)) flags |= UEVENT_GENERATED;
      }
      return devStatus(md, flags);
    } finally {
      if (oldMap) destroyTable(oldMap);
    }
  }

  function load(ref: NativeDeviceRef, specs: NativeTarget[], flagsIn: number): NativeDeviceInfo {
    const found = findDevice(ref, cleanFlags(flagsIn));
    const { md } = found;
    const table = buildTable(md, specs, (found.flags & READONLY) !== 0);
    if (!md.hasDisk) {
      // The first table sets up the queue (limits checked now) and adds the disk.
      if (areasInvalid(table)) refuse(EINVAL);
      md.hasDisk = true;
      recordUevent(md, 'add', 0);
    }
    const old = md.inactive;
    md.inactive = table;
    const info = devStatus(md, found.flags | INACTIVE_PRESENT);
    destroyTable(old);
    return info;
  }

  function clear(ref: NativeDeviceRef): NativeDeviceInfo {
    const { md, flags } = findDevice(ref, 0);
    const old = md.inactive;
    md.inactive = undefined;
    const info = devStatus(md, flags & ~INACTIVE_PRESENT);
    destroyTable(old);
    return info;
  }

  function chosenTable(md: MappedDevice, flags: number): LoadedTable | undefined {
    return flags & QUERY_INACTIVE ? md.inactive : md.live;
  }

  function deps(ref: NativeDeviceRef, flagsIn: number): { info: NativeDeviceInfo; devices: [number, number][] } {
    const { md, flags } = findDevice(ref, cleanFlags(flagsIn));
    const info = devStatus(md, flags);
    // The kernel adds each device at the head of the table's list.
    const held = [...(chosenTable(md, flags)?.devices.values() ?? [])].reverse();
    return { info, devices: held.map(({ dev }) => [dev.major, dev.minor] as [number, number]) };
  }

  function tableStatus(ref: NativeDeviceRef, flagsIn: number): { info: NativeDeviceInfo; targets: NativeTarget[] } {
    const { md, flags } = findDevice(ref, cleanFlags(flagsIn));
    const info = devStatus(md, flags);
    const table = chosenTable(md, flags);
    if (!table) return { info, targets: [] };
    info.targetCount = table.targets.length;
    const targets = table.targets.map((t) => ({
      start: t.start,
      length: t.length,
      type: t.type,
      params: flags & STATUS_TABLE ? tableParams(t) : statusText(t),
    }));
    return { info, targets };
  }

  function message(ref: NativeDeviceRef, sector: number, text: string): string | null {
    const { md } = findDevice(ref, 0);
    const argv = splitArgs(text);
    if (argv.length === 0) refuse(EINVAL);
    if (argv[0]!.startsWith('@')) {
      // Messages for the dm core itself.
      const word = argv[0]!.toLowerCase();
      if (word === '@cancel_deferred_remove') {
        if (argv.length !== 1) refuse(EINVAL);
        md.deferredRemove = false;
        return null;
      }
      if (word === '@stats_list') return '';
      return refuse(EINVAL);
    }
    // Without a live table the kernel returns 2 from the ioctl, having done nothing.
    if (!md.live) return null;
    const target = md.live.targets.find((t) => sector >= t.start && sector < t.start + t.length);
    if (!target) return refuse(EINVAL);
    const handler = system.messageHandlers.get(target.type);
    if (!handler) return refuse(EINVAL);
    const reply = handler(argv, { start: target.start, length: target.length, type: target.type, params: target.params });
    if (reply !== null && typeof reply === 'object') return refuse(reply.errno);
    return reply;
  }

  /** With DM_UUID_FLAG: the uuid (null for none) from interface 4.45 on; before that only event_nr follows the name. */
  function listDevices(): NativeListEntry[] {
    const [major, minor] = system.driverVersion;
    const listsUuids = major > 4 || (major === 4 && minor >= 45);
    return [...mds.values()]
      .sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)))
      .map((md) => ({ name: md.name, major: DM_MAJOR, minor: md.minor, eventNr: md.eventNr, ...(listsUuids ? { uuid: md.uuid || null } : {}) }));
  }

  // ---- udev cookies ---------------------------------------------------------------------

  const semError = (errno: number, syscall: string) => makeSyscallError({ errno, syscall });

  function checkCookie(semid: number): void {
    if (system.semaphores.get(semid) !== 0) return;
    const pending = cookieWaiters.get(semid);
    if (!pending?.length) return;
    destroyCookie(semid, false);
    for (const waiter of pending) waiter.done(true);
  }

  function destroyCookie(semid: number, wakeWaiters: boolean): void {
    system.semaphores.delete(semid);
    cookieBases.delete(semid);
    const pending = cookieWaiters.get(semid) ?? [];
    cookieWaiters.delete(semid);
    if (wakeWaiters) for (const waiter of pending) waiter.done(semError(EIDRM, 'semtimedop'));
  }

  function udevCookieCreate(): NativeUdevCookie {
    const used = new Set(cookieBases.values());
    while (used.has(nextCookieBase)) nextCookieBase = (nextCookieBase % 0xffff) + 1;
    const base = nextCookieBase;
    nextCookieBase = (nextCookieBase % 0xffff) + 1;
    const semid = nextSemid++;
    system.semaphores.set(semid, 0);
    cookieBases.set(semid, base);
    return { base, semid };
  }

  function udevCookieAdd(semid: number, delta: 1 | -1): void {
    const value = system.semaphores.get(semid);
    if (value === undefined) throw semError(EINVAL, 'semop');
    if (value + delta < 0) throw semError(EAGAIN, 'semop'); // IPC_NOWAIT
    system.semaphores.set(semid, value + delta);
    checkCookie(semid);
  }

  function udevCookieWait(semid: number, timeoutMs: number): Promise<boolean> {
    const value = system.semaphores.get(semid);
    if (value === undefined) return Promise.reject(semError(EINVAL, 'semtimedop'));
    if (value === 0) {
      destroyCookie(semid, false);
      return Promise.resolve(true);
    }
    return new Promise<boolean>((resolve, reject) => {
      const waiter = {
        done: (result: boolean | Error) => {
          clearTimeout(timer);
          if (result instanceof Error) reject(result);
          else resolve(result);
        },
      };
      const timer = setTimeout(() => {
        const pending = cookieWaiters.get(semid) ?? [];
        pending.splice(pending.indexOf(waiter), 1);
        destroyCookie(semid, true);
        resolve(false);
      }, timeoutMs);
      cookieWaiters.set(semid, [...(cookieWaiters.get(semid) ?? []), waiter]);
    });
  }

  // ---- the binding -----------------------------------------------------------------------

  function failOpen(errno: number, syscall: string, path: string): never {
    throw makeSyscallError({ errno, syscall, path });
  }

  /** A device behind a path, opened as the addon opens it for block-device queries. */
  function openPath(path: string): NativeBlockDeviceInfo {
    const found = lookupPath(path);
    if (!found) return failOpen(ENOENT, 'open', path);
    if (found === 'other') return failOpen(ENOTBLK, 'open', path);
    if (system.unprivileged) failOpen(EACCES, 'open', path);
    return infoOf(found, path);
  }

  /** BLKGETSIZE64 and friends of a device number (ENXIO for a dm device without a disk). */
  function infoOf(found: DevNumber, path: string): NativeBlockDeviceInfo {
    const loop = loopByNumber(found.major, found.minor);
    if (loop) return { ...loop };
    const md = found.major === DM_MAJOR ? mdByMinor(found.minor) : undefined;
    if (!md || !md.hasDisk) return failOpen(ENXIO, 'open', path);
    const size = md.live?.size ?? 0;
    return { sizeBytes: size * 512, logicalSectorSize: 512, physicalSectorSize: 512, readOnly: md.diskReadOnly, major: DM_MAJOR, minor: md.minor };
  }

  /** What libblkid finds on a device: the signatures of every path naming it, and a COW header. */
  function signaturesOf(found: DevNumber | 'other' | undefined, path: string): NativeSignature[] {
    const paths = found && found !== 'other' ? [...system.signatures.keys()].filter((p) => (lookupDevicePath(p) as DevNumber | undefined)?.key === found.key) : [];
    const known = [...new Set([path, ...paths])].flatMap((p) => system.signatures.get(p) ?? []);
    const signatures = known.map((signature) => ({ ...signature }));
    // libblkid knows the header a persistent snapshot leaves at the start of its COW.
    const hasHeader = found && found !== 'other' && openable(found) && cowMetadata.has(storageKey(found));
    if (hasHeader && !signatures.some((s) => s.type === 'DM_snapshot_cow')) {
      signatures.push({ type: 'DM_snapshot_cow', usage: 'other', label: '', uuid: '', offset: 0 });
    }
    return signatures;
  }

  /** The first bytes of a device: the persistent snapshot header, if one is there. */
  function bytesOf(found: DevNumber, offset: number, length: number): Buffer {
    const bytes = Buffer.alloc(length);
    // The persistent snapshot header: magic "SnAp", valid, version 1, chunk size.
    const store = openable(found) ? cowMetadata.get(storageKey(found)) : undefined;
    if (store?.persistent && offset === 0 && length >= 16) {
      bytes.writeUInt32LE(0x70416e53, 0);
      bytes.writeUInt32LE(store.valid ? 1 : 0, 4);
      bytes.writeUInt32LE(1, 8);
      bytes.writeUInt32LE(store.chunkSize, 12);
    }
    return bytes;
  }

  /** Zeroing the start of a device: its snapshot header and the signatures in that range go. */
  function zeroStart(found: DevNumber, path: string, lengthBytes: number): void {
    cowMetadata.delete(storageKey(found));
    system.zeroed.set(path, lengthBytes);
    for (const p of [...system.signatures.keys()]) {
      if ((lookupDevicePath(p) as DevNumber | undefined)?.key !== found.key) continue;
      const left = (system.signatures.get(p) ?? []).filter((signature) => signature.offset >= lengthBytes);
      if (left.length > 0) system.signatures.set(p, left);
      else system.signatures.delete(p);
    }
  }

  /** The addon's BlockDevice: one device, fixed at open, whatever becomes of the path. */
  function openHandle(path: string, exclusive: boolean, writable: boolean): NativeBlockDevice {
    if (exclusive && spawning > 0) system.exclusiveOpensDuringSpawn++;
    const found = lookupPath(path);
    if (!found) return failOpen(ENOENT, 'open', path);
    if (found === 'other') return failOpen(ENOTBLK, 'open', path);
    if (system.unprivileged) return failOpen(EACCES, 'open', path);
    if (exclusive && (claimedByTables(found.key) || (externalOpens.get(found.key)?.exclusive ?? 0) > 0)) failOpen(EBUSY, 'open', path);
    const opens = externalOpens.get(found.key) ?? { count: 0, exclusive: 0 };
    opens.count++;
    if (exclusive) opens.exclusive++;
    externalOpens.set(found.key, opens);
    let closed = false;
    const live = () => {
      if (closed) throw new Error(`the block device ${path} is closed`);
    };
    return {
      path,
      major: found.major,
      minor: found.minor,
      get closed() {
        return closed;
      },
      async query() {
        live();
        return infoOf(found, path);
      },
      async probeSignatures() {
        live();
        return signaturesOf(found, path);
      },
      async read(offset: number, length: number) {
        live();
        return bytesOf(found, offset, length);
      },
      async zeroStart(lengthBytes: number) {
        live();
        if (!writable) throw new Error(`the block device ${path} was opened read-only`);
        zeroStart(found, path, lengthBytes);
      },
      close() {
        if (closed) return;
        closed = true;
        opens.count--;
        if (exclusive) opens.exclusive--;
        if (opens.count === 0) externalOpens.delete(found.key);
        scheduleDeferredRemovals();
      },
    };
  }

  function describe(ref: NativeDeviceRef): string {
    if (ref.name) return ref.name;
    if (ref.uuid) return `uuid ${ref.uuid}`;
    if (ref.major !== undefined && ref.minor !== undefined) return `${ref.major}:${ref.minor}`;
    return '';
  }

  function openControlState(path: string): NativeControl {
    const state: ControlState = { path, closed: false, armed: globalEventNr, polls: [] };
    controls.add(state);
    system.openControls++;

    /** One ioctl: EBADF once closed, EACCES without CAP_SYS_ADMIN, else the kernel's answer. */
    async function ioctl<T>(name: string, device: string, op: () => T | Promise<T>): Promise<T> {
      function fail(errno: number): never {
        throw makeSyscallError({ errno, syscall: 'ioctl', ioctl: name, path, ...(device ? { device } : {}) });
      }
      if (state.closed) fail(EBADF);
      if (system.unprivileged) fail(EACCES);
      try {
        return await op();
      } catch (error) {
        if (error instanceof KernelError) return fail(error.errno);
        throw error;
      }
    }

    const control: NativeControl = {
      path,
      get closed() {
        return state.closed;
      },
      freeze: (...args) => fakeFreeze(control, ...args),
      version: () => ioctl('DM_VERSION', '', () => [...system.driverVersion] as [number, number, number]),
      listDevices: () => ioctl('DM_LIST_DEVICES', '', listDevices),
      listVersions: () => ioctl('DM_LIST_VERSIONS', '', () => TARGET_VERSIONS.map((v) => ({ name: v.name, version: [...v.version] as [number, number, number] }))),
      create: (name, uuid, flags) => ioctl('DM_DEV_CREATE', name, () => create(name, uuid, flags)),
      remove: (ref, flags, eventNr) => ioctl('DM_DEV_REMOVE', describe(ref), () => remove(ref, flags, eventNr)),
      rename: (ref, newValue, flags, eventNr) => ioctl('DM_DEV_RENAME', describe(ref), () => rename(ref, newValue, flags, eventNr)),
      suspend: (ref, flags) => ioctl('DM_DEV_SUSPEND', describe(ref), () => suspend(ref, flags)),
      resume: (ref, flags, eventNr) => ioctl('DM_DEV_SUSPEND', describe(ref), () => resume(ref, flags, eventNr)),
      info: (ref, flags) =>
        ioctl('DM_DEV_STATUS', describe(ref), () => {
          const found = findDevice(ref, cleanFlags(flags));
          return devStatus(found.md, found.flags);
        }),
      waitEvent: (ref, eventNr) =>
        ioctl('DM_DEV_WAIT', describe(ref), () => {
          const { md, flags } = findDevice(ref, 0);
          if (md.eventNr !== eventNr >>> 0) return devStatus(md, flags);
          return new Promise<NativeDeviceInfo>((resolve) => {
            waiters.push({ md, eventNr: eventNr >>> 0, wake: () => resolve(devStatus(md, flags)) });
          });
        }),
      load: (ref, targets, flags) => ioctl('DM_TABLE_LOAD', describe(ref), () => load(ref, targets, flags)),
      clear: (ref) => ioctl('DM_TABLE_CLEAR', describe(ref), () => clear(ref)),
      deps: (ref, flags) => ioctl('DM_TABLE_DEPS', describe(ref), () => deps(ref, flags)),
      tableStatus: (ref, flags) => ioctl('DM_TABLE_STATUS', describe(ref), () => tableStatus(ref, flags)),
      message: (ref, sector, text) => ioctl('DM_TARGET_MSG', describe(ref), () => message(ref, sector, text)),
      armPoll: () =>
        ioctl('DM_DEV_ARM_POLL', '', () => {
          state.armed = globalEventNr;
        }),
      pollReadable() {
        if (state.closed) return Promise.reject(makeSyscallError({ errno: EBADF, syscall: 'poll', path }));
        if (globalEventNr - state.armed > 0) return Promise.resolve(true);
        return new Promise<boolean>((resolve) => state.polls.push(resolve));
      },
      cancelPoll() {
        for (const done of state.polls.splice(0)) done(false);
      },
      close() {
        if (state.closed) return;
        state.closed = true;
        controls.delete(state);
        system.openControls--;
        for (const done of state.polls.splice(0)) done(false);
      },
    };
    return control;
  }

  system.binding = {
    constants,
    async openControl(path: string): Promise<NativeControl> {
      if (!system.dmLoaded || path !== '/dev/mapper/control') failOpen(ENOENT, 'open', path);
      if (system.unprivileged) failOpen(EACCES, 'open', path);
      return openControlState(path);
    },
    async queryBlockDevice(path: string) {
      return openPath(path);
    },
    async statBlockDevice(path: string) {
      const found = lookupPath(path);
      if (!found) return failOpen(ENOENT, 'stat', path);
      if (found === 'other') return failOpen(ENOTBLK, 'stat', path);
      return { major: found.major, minor: found.minor };
    },
    async readDeviceBytes(path: string, offset: number, length: number) {
      const found = lookupDevicePath(path);
      if (!found) return failOpen(ENOENT, 'open', path);
      if (found === 'other') return failOpen(ENOTBLK, 'open', path);
      return bytesOf(found, offset, length);
    },
    async probeSignatures(path: string) {
      const known = system.signatures.get(path);
      const found = lookupDevicePath(path);
      if (!found && !known) return failOpen(ENOENT, 'open', path);
      if (found === 'other' && !known) return failOpen(ENOTBLK, 'open', path);
      if (system.unprivileged) return failOpen(EACCES, 'open', path);
      return signaturesOf(found, path);
    },
    async openBlockDevice(path: string, exclusive: boolean, writable: boolean) {
      return openHandle(path, exclusive, writable);
    },
    async makeBlockNode(path: string, major: number, minor: number, mode: number) {
      if (system.unprivileged) failOpen(EPERM, 'mknod', path);
      if (lookupPath(path)) failOpen(EEXIST, 'mknod', path);
      system.nodes.set(path, { major, minor, mode });
    },
    udevCookieCreate,
    udevCookieAdd,
    udevCookieWait,
    udevCookieDestroy: (semid: number) => destroyCookie(semid, true),
    async checkExclusive(path: string) {
      if (spawning > 0) system.exclusiveOpensDuringSpawn++;
      const found = lookupPath(path);
      if (!found) return failOpen(ENOENT, 'open', path);
      if (found === 'other') return failOpen(ENOTBLK, 'open', path);
      if (system.unprivileged) return failOpen(EACCES, 'open', path);
      if (claimedByTables(found.key) || (externalOpens.get(found.key)?.exclusive ?? 0) > 0) failOpen(EBUSY, 'open', path);
    },
    async mount(source: string, target: string) {
      if (system.unprivileged) failOpen(EPERM, 'mount', target);
      if (system.mounts.has(target)) failOpen(EBUSY, 'mount', target);
      const close = openBlockDevice(source, { exclusive: true });
      mountClosers.set(target, close);
      system.mounts.set(target, source);
    },
    async unmount(target: string) {
      const close = mountClosers.get(target);
      if (!close) return failOpen(EINVAL, 'umount2', target);
      close();
      mountClosers.delete(target);
      system.mounts.delete(target);
    },
    // The fake kernel never outlives the test process: a guardian has nothing to do.
    async spawnGuardian(executable: string, controlPath: string, _originName: string, _lockPath: string, _lockId: string) {
      // A spawn takes a turn of the loop on a pool thread, as the real one does.
      spawning++;
      await new Promise((resolve) => setImmediate(resolve));
      spawning--;
      if (!existsSync(executable)) return failOpen(ENOENT, 'posix_spawn', executable);
      if (!system.dmLoaded) return failOpen(ENOENT, 'open', controlPath);
      system.guardians++;
      return { pid: 0, fd: -1 };
    },
    async awaitGuardianReady() {},
    async finishGuardian(_pid: number, _fd: number, done: boolean) {
      // The real call waits for the child on a pool thread: it ends a turn of the loop later.
      await new Promise((resolve) => setImmediate(resolve));
      system.guardians--;
      return done ? 0 : 1;
    },
    // Advisory locks are plain files: the real flock works on this machine too.
    tryLock: (fd: number) => loadBinding().tryLock(fd),
    unlock: (fd: number) => loadBinding().unlock(fd),
  };
  return system;
}

/**
 * A temporary folder to stand in for /dev/mapper: the fake's mknod makes a symbolic link
 * there (unprivileged tests cannot make block nodes), which the client treats as it
 * treats udev's links. Returns the folder and a function that removes it.
 */
export function fakeNodeDirectory(system: FakeSystem): { devDir: string; remove(): void } {
  const devDir = mkdtempSync(join(tmpdir(), 'dmsnap-nodes-'));
  const makeBlockNode = system.binding.makeBlockNode.bind(system.binding);
  system.binding.makeBlockNode = async (path, major, minor, mode) => {
    // The client unlinks nodes with fs; the fake's record of them follows the disk.
    system.nodes.delete(path);
    await makeBlockNode(path, major, minor, mode);
    symlinkSync(`/dev/fake-${major}-${minor}`, path);
  };
  return { devDir, remove: () => rmSync(devDir, { recursive: true, force: true }) };
}
