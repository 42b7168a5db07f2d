/**
 * dmsnap's invariants, checked on the kernel's state. Whenever no dmsnap call is working
 * on an origin (its lock is free), all of these hold:
 *
 *   - none of its devices is suspended, and none has a table waiting in its inactive slot;
 *   - NAME runs `snapshot-origin NAME-real` if and only if it has snapshots, and otherwise
 *     the linear table of NAME-real — or, during a rollback, `snapshot-merge NAME-real COW`;
 *   - every snapshot reads NAME-real, and its COW is used by no other table (but the
 *     snapshot being merged, whose COW the origin's snapshot-merge uses too);
 *   - every COW mapping (NAME-SNAP-cow) belongs to a snapshot that exists, or to the merge.
 *
 * A state that breaks one is what an interrupted call leaves (or a hand-made change): the
 * lifecycle refuses to act on it, `status` shows it, and `recover` repairs it.
 */
import type { DeviceInfo, DeviceMapper } from '../dm/device-mapper';
import type { TargetLine } from '../dm/table';
import { DmsnapError } from '../errors';
import { parseSnapshotParams } from '../targets/snapshot';
import { scanGroups, type OriginGroup } from './discover';
import { devKey, holdersOf } from '../system/stack';
import { parseDevKey } from '../dev-number';

/** Which invariant a device breaks. */
export type ViolationKind =
  | 'incomplete-origin'
  | 'suspended'
  | 'inactive-table'
  | 'origin-not-feeding'
  | 'origin-without-snapshots'
  | 'origin-table'
  | 'snapshot-table'
  | 'snapshot-wrong-origin'
  | 'cow-shared'
  | 'cow-mapping-orphaned';

/** One broken invariant. */
/**
 * Snapshot-origin with no snapshot left (a drop interrupted after its remove) is harmless to
 * build on: a new snapshot is fed by it, and the next drop restores the linear table.
 */
export const BENIGN_FOR_LIFECYCLE: ReadonlySet<ViolationKind> = new Set(['origin-without-snapshots', 'cow-mapping-orphaned']);

export interface Violation {
  /** The device that breaks it. */
  device: string;
  kind: ViolationKind;
  /** What is wrong, in plain words. */
  message: string;
}

/** The state of one device, as the checker read it. */
interface DeviceState {
  info: DeviceInfo;
  line: TargetLine | undefined;
}

async function stateOf(dm: DeviceMapper, name: string): Promise<DeviceState | undefined> {
  const info = await dm.find(name);
  if (!info) return undefined;
  const [line] = info.liveTable ? await dm.table(name) : [];
  return { info, line };
}

/** Every invariant the devices of one origin break now; empty when they hold. */
export async function groupViolations(dm: DeviceMapper, group: OriginGroup): Promise<Violation[]> {
  const [origin, real, ...snaps] = await Promise.all(
    [group.origin?.name, group.real?.name, ...group.snaps.map((s) => s.name)].map((name) => (name ? stateOf(dm, name) : undefined)),
  );
  const found: Violation[] = [];
  const add = (device: string, kind: ViolationKind, message: string) => found.push({ device, kind, message });
  for (const state of [origin, real, ...snaps]) {
    if (!state) continue;
    if (state.info.suspended) add(state.info.name, 'suspended', `${state.info.name} is suspended`);
    if (state.info.inactiveTable) add(state.info.name, 'inactive-table', `${state.info.name} has a table waiting in its inactive slot`);
  }
  if (!origin || !real) {
    const names = [group.origin?.name, group.real?.name, ...group.snaps.map((s) => s.name)].filter(Boolean).join(', ');
    add(names, 'incomplete-origin', `an origin without its ${origin ? 'NAME-real' : 'wrapper NAME'} (devices: ${names})`);
    return found;
  }
  const realKey = devKey(real.info);
  const liveSnaps = snaps.filter((s): s is DeviceState => s !== undefined);
  // A rollback's snapshot-merge feeds the other snapshots as snapshot-origin does.
  const merge = origin.line?.type === 'snapshot-merge' ? parseSnapshotParams(origin.line.params) : undefined;
  const feeding = (origin.line?.type === 'snapshot-origin' && origin.line.params === realKey) || merge?.origin === realKey;
  if (liveSnaps.length > 0 && !feeding) {
    add(
      origin.info.name,
      'origin-not-feeding',
      `${origin.info.name} runs ${describe(origin.line)}, not snapshot-origin ${realKey}: its ${liveSnaps.length} snapshot(s) receive no copy-on-write`,
    );
  }
  if (liveSnaps.length === 0 && merge) {
    // A merge whose snapshot device is gone: it runs on, and finishing it restores the linear table.
  } else if (liveSnaps.length === 0 && origin.line?.type === 'snapshot-origin') {
    add(origin.info.name, 'origin-without-snapshots', `${origin.info.name} runs snapshot-origin but has no snapshot`);
  } else if (liveSnaps.length === 0 && !sameLine(origin.line, real.line)) {
    add(origin.info.name, 'origin-table', `${origin.info.name} runs ${describe(origin.line)}, not the linear table of ${real.info.name}`);
  }
  for (const mapping of group.cows) {
    const used = group.snaps.some((s) => s.tag.snapId === mapping.tag.snapId) || merge?.cow === `${mapping.major}:${mapping.minor}`;
    if (!used) add(mapping.name, 'cow-mapping-orphaned', `the COW mapping ${mapping.name} has no snapshot`);
  }
  for (const snap of liveSnaps) {
    const { name } = snap.info;
    if (snap.line?.type !== 'snapshot' && snap.line?.type !== 'snapshot-merge') {
      add(name, 'snapshot-table', `snapshot ${name} runs ${describe(snap.line)}`);
      continue;
    }
    const params = parseSnapshotParams(snap.line.params);
    if (params.origin !== realKey) add(name, 'snapshot-wrong-origin', `snapshot ${name} reads ${params.origin}, not ${real.info.name} (${realKey})`);
    const cow = parseDevKey(params.cow);
    // The snapshot being merged shares its COW with the origin's snapshot-merge, and no one else.
    const users = (cow ? holdersOf(cow) : []).filter((key) => !(merge?.cow === params.cow && key === devKey(origin.info)));
    if (users.length > 1) add(name, 'cow-shared', `the COW ${params.cow} of snapshot ${name} is used by ${users.length} devices (${users.join(', ')})`);
  }
  return found;
}

function describe(line: TargetLine | undefined): string {
  return line ? `"${line.type} ${line.params}"` : 'no table';
}

function sameLine(a: TargetLine | undefined, b: TargetLine | undefined): boolean {
  return a !== undefined && b !== undefined && a.type === b.type && a.params === b.params && a.length === b.length;
}

/** The group of the origin whose tags carry `originId`, read from the kernel now. */
export async function currentGroup(dm: DeviceMapper, originId: string): Promise<OriginGroup> {
  return (await scanGroups(dm)).get(originId) ?? { originId, snaps: [], cows: [] };
}

/**
 * Fails unless every invariant holds for this origin: dmsnap never builds on a state an
 * interrupted call left behind. The error lists what is wrong and says to run recover.
 */
export async function assertConsistent(
  dm: DeviceMapper,
  originName: string,
  group: OriginGroup,
  tolerated: ReadonlySet<ViolationKind> = new Set(),
): Promise<void> {
  const found = (await groupViolations(dm, group)).filter((v) => !tolerated.has(v.kind));
  if (found.length === 0) return;
  throw new DmsnapError(
    `${originName} is not in a consistent state: ${found.map((v) => v.message).join('; ')}. ` +
      'An interrupted dmsnap run (or a change made by hand) left it so; run "dmsnap recover", then try again',
    'ERR_DMSNAP_INCONSISTENT',
  );
}
