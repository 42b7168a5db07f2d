/**
 * The snapshot and snapshot-merge targets (dm-snap.c): their constructor, the exception
 * store it finds or starts on the COW, the handover between two snapshots of one COW,
 * and what a resume does to them.
 */
import { EINVAL, MODE_READ, MODE_WRITE } from './constants';
import { refuse, type DevNumber, type FakeState, type LoadedTable, type LoadedTarget, type MappedDevice, type SnapshotMapping } from './model';
import { getDevice } from './opens';
import { isPowerOfTwo, parseUnsigned } from './parse';
import { logicalSectors, storageKey } from './paths';

/** Snapshots registered on an origin: every snapshot target in any table, plus those being built. */
export function snapshotTargets(s: FakeState, extra: LoadedTarget[] = []): LoadedTarget[] {
  const found: LoadedTarget[] = [];
  for (const md of s.mds.values()) {
    for (const table of [md.live, md.inactive]) {
      for (const target of table?.targets ?? []) if (target.mapping.kind === 'snapshot') found.push(target);
    }
  }
  for (const target of extra) if (target.mapping.kind === 'snapshot') found.push(target);
  return found;
}

const sharesCow = (a: SnapshotMapping, b: SnapshotMapping) => a.origin.key === b.origin.key && a.cow.key === b.cow.key;

/** The optional feature arguments: discard_zeroes_cow, discard_passdown_origin. */
function parseFeatures(features: string[]): { zeroesCow: boolean; passdownOrigin: boolean } {
  let zeroesCow = false;
  let passdownOrigin = false;
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
  return { zeroesCow, passdownOrigin };
}

/** dm_exception_store_create: P or N (any case, P optionally with O), then the chunk size. */
function parseStoreType(s: FakeState, storeArg: string, chunkArg: string | undefined, origin: DevNumber, cow: DevNumber) {
  const storeType = storeArg.toUpperCase();
  if (storeType[0] !== 'P' && storeType[0] !== 'N') refuse(EINVAL);
  const persistent = storeType[0] === 'P';
  const chunk = parseUnsigned(chunkArg, 0xffffffff);
  if (chunk === undefined) refuse(EINVAL);
  if (chunk !== 0) {
    if (!isPowerOfTwo(chunk!) || chunk! % logicalSectors(s, cow) !== 0 || chunk! % logicalSectors(s, origin) !== 0) refuse(EINVAL);
    if (chunk! > 0x7fffffff >> 9) refuse(EINVAL);
  }
  let overflowOption = false;
  if (persistent && storeType.length > 1) {
    if (storeType[1] === 'O') overflowOption = true;
    else refuse(EINVAL);
  }
  return { persistent, chunk: chunk!, overflowOption };
}

export function constructSnapshot(s: FakeState, table: LoadedTable, argv: string[], merge: boolean): SnapshotMapping {
  if (argv.length < 4) refuse(EINVAL);
  const { zeroesCow, passdownOrigin } = parseFeatures(argv.slice(4));
  const origin = getDevice(s, table, argv[0]!, merge ? MODE_WRITE : MODE_READ);
  const cow = getDevice(s, table, argv[1]!, table.readOnly ? MODE_READ : MODE_READ | MODE_WRITE);
  if (cow.key === origin.key) refuse(EINVAL);
  const { persistent, chunk, overflowOption } = parseStoreType(s, argv[2]!, argv[3], origin, cow);
  const mapping: SnapshotMapping = {
    kind: 'snapshot',
    merge,
    origin,
    cow,
    overflowOption,
    overflowed: false,
    zeroesCow,
    passdownOrigin,
    store: undefined as unknown as SnapshotMapping['store'],
    active: false,
  };
  // register_snapshot: another snapshot on the same origin and COW means a handover
  // from the active one; an inactive one, or two, cannot be paired.
  const sharing = snapshotTargets(s, table.targets).filter((t) => sharesCow(t.mapping as SnapshotMapping, mapping));
  const active = sharing.filter((t) => (t.mapping as SnapshotMapping).active);
  if (sharing.length >= 2 || sharing.length > active.length) refuse(EINVAL);
  if (active.length === 1) {
    mapping.handoverFrom = active[0]!;
    mapping.store = (active[0]!.mapping as SnapshotMapping).store;
    return mapping;
  }
  mapping.store = openStore(s, cow, persistent, chunk);
  return mapping;
}

/** read_metadata for P (a zeroed header means a new snapshot, whose header is written now); N starts empty. */
function openStore(s: FakeState, cow: DevNumber, persistent: boolean, chunk: number): SnapshotMapping['store'] {
  if (!persistent) {
    if (chunk === 0) refuse(EINVAL);
    return { persistent: false, chunkSize: chunk, nextFree: 0, exceptions: new Set(), valid: true };
  }
  const where = storageKey(s, cow);
  let store = s.cowMetadata.get(where);
  if (!store) {
    store = { persistent: true, chunkSize: chunk || Math.max(8, logicalSectors(s, cow)), nextFree: 2, exceptions: new Set(), valid: true };
    s.cowMetadata.set(where, store);
  }
  return store;
}

/** snapshot_preresume: a handover needs its source suspended. */
export function checkHandovers(md: MappedDevice): void {
  for (const target of md.live!.targets) {
    const m = target.mapping;
    if (m.kind !== 'snapshot' || !m.handoverFrom) continue;
    const source = m.handoverFrom.table.md;
    if (source !== md && !source.suspended && source.live === m.handoverFrom.table) refuse(EINVAL);
  }
}

/** snapshot_resume: takes over a handed-over store, starts tracking the origin; a merge completes at once. */
export function activateSnapshots(md: MappedDevice): void {
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
}
