/**
 * The fake kernel's inner state: the dm devices and their loaded tables, the exception
 * stores of snapshots, and the one state object every module of the fake works on.
 */
import type { FakeFile, FakeMappedDevice, FakeSystem, FakeTable, FakeTableTarget } from './system';

/** A kernel failure inside an ioctl; the control turns it into the addon's error. */
export class KernelError extends Error {
  constructor(readonly errno: number) {
    super(`errno ${errno}`);
  }
}

export function refuse(errno: number): never {
  throw new KernelError(errno);
}

export interface DevNumber {
  key: string;
  major: number;
  minor: number;
}

/** The state of an exception store: on the COW device for P, in memory for N. */
export interface SnapshotStore {
  persistent: boolean;
  chunkSize: number;
  /** Next free chunk (persistent) or sector (transient) on the COW. */
  nextFree: number;
  /** Origin chunks already copied. */
  exceptions: Set<number>;
  valid: boolean;
}

export type Mapping =
  | { kind: 'linear'; dev: DevNumber; offset: number }
  | { kind: 'striped'; chunk: number; stripes: { dev: DevNumber; offset: number }[] }
  | { kind: 'origin'; dev: DevNumber }
  | { kind: 'none' }
  | SnapshotMapping;

export interface SnapshotMapping {
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

export interface LoadedTarget extends FakeTableTarget {
  mapping: Mapping;
  table: LoadedTable;
}

export interface LoadedTable extends FakeTable {
  readonly targets: LoadedTarget[];
  /** The devices the table holds open, in the order first used, with the mode of the open. */
  devices: Map<string, { dev: DevNumber; mode: number }>;
  md: MappedDevice;
  size: number;
}

export interface MappedDevice extends FakeMappedDevice {
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

export interface ControlState {
  path: string;
  closed: boolean;
  armed: number;
  polls: ((readable: boolean) => void)[];
}

/** Opens by programs (not by tables) of one device: count and how many are exclusive. */
export interface ExternalOpens {
  count: number;
  exclusive: number;
}

/** A loop device the binding attached (loopAttach): its backing file and lo_* fields. */
export interface FakeLoop {
  dev: DevNumber;
  file: FakeFile;
  tag: string;
  /** lo_flags (LO_FLAGS_*). */
  flags: number;
}

/** Everything the fake kernel keeps, shared by its modules. */
export interface FakeState {
  system: FakeSystem;
  /** Every dm device by name (FakeSystem.devices shows the same map). */
  mds: Map<string, MappedDevice>;
  controls: Set<ControlState>;
  waiters: { md: MappedDevice; eventNr: number; wake: () => void }[];
  /** Persistent snapshot metadata by where it lives: "MAJOR:MINOR@SECTOR" of the underlying device. */
  cowMetadata: Map<string, SnapshotStore>;
  /** Bytes written through writeAt, by sector of the underlying device ("MAJOR:MINOR@SECTOR"), 512 each. */
  sectorData: Map<string, Buffer>;
  externalOpens: Map<string, ExternalOpens>;
  mountClosers: Map<string, () => void>;
  cookieBases: Map<number, number>;
  cookieWaiters: Map<number, { done: (result: boolean | Error) => void }[]>;
  /** Advisory locks: the file ("DEV:INO") → the descriptor holding it. */
  locks: Map<string, number>;
  globalEventNr: number;
  deferredScheduled: boolean;
  nextSemid: number;
  nextCookieBase: number;
  /** Guardian spawns in flight. */
  spawning: number;
  /** Loop devices loopAttach bound, by path (/dev/loopN). */
  loops: Map<string, FakeLoop>;
  /** Minors of the loop devices that exist, bound or not (LOOP_CTL_GET_FREE adds them). */
  loopNodes: Set<number>;
}

/** A state with no devices; `system` is filled in by the entry point. */
export function newState(): FakeState {
  return {
    system: undefined as unknown as FakeSystem,
    mds: new Map(),
    controls: new Set(),
    waiters: [],
    cowMetadata: new Map(),
    sectorData: new Map(),
    externalOpens: new Map(),
    mountClosers: new Map(),
    cookieBases: new Map(),
    cookieWaiters: new Map(),
    locks: new Map(),
    globalEventNr: 0,
    deferredScheduled: false,
    nextSemid: 32768,
    nextCookieBase: 1,
    spawning: 0,
    loops: new Map(),
    loopNodes: new Set(),
  };
}
