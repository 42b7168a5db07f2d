/**
 * Recovery after a crash, from the kernel's state alone: every interrupted state of a
 * dmsnap origin is brought back to either "snapshot active and valid" or "no snapshot,
 * origin linear over NAME-real". Idempotent, and it never touches a device without
 * dmsnap's tag.
 */
import type { DeviceInfo, DeviceMapper } from '../dm/device-mapper';
import { DmsnapError } from '../errors';
import { clientOf, HIDDEN_LAYER, type LifecycleOptions } from './context';
import { scanGroups, type OriginGroup, type TaggedDevice } from './discover';
import { System } from '../system/system';
import { parseSnapshotParams } from '../targets/snapshot';
import { devKey, holdersOf } from '../system/stack';
import { parseDevKey } from '../dev-number';
import { CowRecords } from '../system/cow-records';
import { detachCowLoop, discardCowFile } from './cow-file';
import { mappedCow, readCowLabel, removeUnusedCowMappings, restingState, updateCowLabel } from './cow-mapping';
import { finishMerge, mergeState, usesCow, type MergeOwner, type MergeState } from './merge';
import type { LockOptions } from '../system/lock';

/**
 * What recover did with a device; 'kept' (a working snapshot) and 'skipped' (another
 * process holds the origin's lock) change nothing.
 */
export type RecoveryActionKind =
  | 'resumed'
  | 'cleared-inactive-table'
  | 'removed'
  | 'restored-linear-table'
  | 'finished-merge'
  | 'removed-cow-file'
  | 'relabelled'
  | 'skipped'
  | 'kept';

/** One thing recover did (or found fine, or could not do). */
export interface RecoveryAction {
  /** The origin's name, when its wrapper exists. */
  origin: string | null;
  /** The device acted on. */
  device: string;
  action: RecoveryActionKind;
  /** Why, in plain words. */
  reason: string;
}

/**
 * Options of recover. An origin whose lock another process holds is skipped after
 * lockTimeoutMs (2 s by default here, not the usual 30 s).
 */
export interface RecoverOptions extends LifecycleOptions {}

/** How long recover waits for an origin's lock before skipping that origin. */
const RECOVER_LOCK_TIMEOUT_MS = 2000;

/**
 * Brings every dmsnap origin back to a consistent state after a crash, from the kernel's
 * state alone: resumes what was left suspended, clears half-loaded tables, removes broken
 * snapshots and leftovers. Idempotent. Returns an entry for each device it looked at.
 */
export async function recover(options: RecoverOptions = {}): Promise<RecoveryAction[]> {
  const dm = await clientOf(options);
  const actions: RecoveryAction[] = [];
  for (const group of (await scanGroups(dm)).values()) {
    const name = group.origin?.name ?? group.real?.name.replace(/-real$/, '') ?? group.snaps[0]?.name ?? group.cows[0].name.replace(/-cow$/, '');
    let unlock: (() => void) | undefined;
    try {
      unlock = await System.of(dm).lock(name, { ...options, lockTimeoutMs: options.lockTimeoutMs ?? RECOVER_LOCK_TIMEOUT_MS });
    } catch (error) {
      if (error instanceof DmsnapError && error.code === 'ERR_DMSNAP_LOCKED') {
        actions.push({ origin: group.origin?.name ?? null, device: name, action: 'skipped', reason: 'another dmsnap process is working on it now' });
        continue;
      }
      throw error;
    }
    try {
      await recoverGroup(dm, group, actions, options);
    } finally {
      unlock();
    }
  }
  await recoverCowFiles(dm, options, actions);
  return actions;
}

/**
 * COW files whose snapshot is gone (a crash between creating the file and the snapshot,
 * or during a drop): their loop device detached, the file deleted if it is still the one
 * dmsnap created. Files kept with keepCowFile stay.
 */
async function recoverCowFiles(dm: DeviceMapper, options: RecoverOptions, actions: RecoveryAction[]): Promise<void> {
  const records = CowRecords.of(options);
  const system = System.of(dm);
  for (const record of records.list()) {
    if (record.state === 'kept') continue;
    let unlock: (() => void) | undefined;
    try {
      unlock = await system.lock(record.originName, { ...options, lockTimeoutMs: options.lockTimeoutMs ?? RECOVER_LOCK_TIMEOUT_MS });
    } catch (error) {
      if (error instanceof DmsnapError && error.code === 'ERR_DMSNAP_LOCKED') {
        actions.push({ origin: record.originName, device: record.path, action: 'skipped', reason: 'another dmsnap process is working on its origin now' });
        continue;
      }
      throw error;
    }
    try {
      // Looked at again under the lock: a snapshot being taken now has its record already.
      const live = records.get(record.originId, record.snapId);
      const snaps = (await scanGroups(dm)).get(record.originId)?.snaps ?? [];
      if (!live || snaps.some((s) => s.tag.snapId === record.snapId)) continue;
      await detachCowLoop(system, live);
      discardCowFile(records, live);
      actions.push({ origin: record.originName, device: record.path, action: 'removed-cow-file', reason: `the COW file of snapshot ${record.snapshotName}, which no longer exists` });
    } finally {
      unlock();
    }
  }
}

async function recoverGroup(dm: DeviceMapper, group: OriginGroup, actions: RecoveryAction[], lockOptions: LockOptions): Promise<void> {
  const origin = group.origin?.name ?? null;
  const note = (device: string, action: RecoveryActionKind, reason: string) => actions.push({ origin, device, action, reason });

  // 1. The origin first: it must be live, and carry no half-loaded table.
  const wrapper = group.origin ? await liveWrapper(dm, group.origin.name, note) : undefined;
  const real = group.real ? await dm.find(group.real.name) : undefined;
  const [wrapperLine] = wrapper?.liveTable ? await dm.table(wrapper.name) : [];
  // A rollback's merge feeds the other snapshots, as snapshot-origin does.
  const merge = wrapper && real ? await mergeState(dm, wrapper.name) : undefined;
  const originTracksReal =
    real !== undefined && ((wrapperLine?.type === 'snapshot-origin' && wrapperLine.params === devKey(real)) || merge?.params.origin === devKey(real));

  // 2. Snapshots: keep those that are active and fed by the origin; remove the rest.
  let kept = 0;
  for (const snap of group.snaps) {
    await resumeSuspendedSnapshot(dm, snap, note);
    if (merge && (await usesCow(dm, snap.name, merge.params.cow))) {
      kept++;
      note(snap.name, 'kept', 'the snapshot being merged back into its origin (a rollback)');
      continue;
    }
    const problem = await snapshotProblem(dm, snap, real, originTracksReal);
    if (problem === undefined) {
      kept++;
      note(snap.name, 'kept', 'an active snapshot of its origin');
      continue;
    }
    const info = await dm.find(snap.name);
    if (info?.inactiveTable) await dm.clear(snap.name);
    if (info?.suspended && info.liveTable) await dm.resume(snap.name);
    await dm.remove(snap.name, { retry: true });
    note(snap.name, 'removed', problem);
  }

  await recoverMappings(dm, group.originId, merge, note);

  // 3. A merge that is done is finished; one that runs is left to run.
  if (wrapper && real && merge) {
    await finishOrKeepMerge({ dm, name: wrapper.name, realName: real.name, originId: group.originId, lockOptions }, merge, note);
    return;
  }

  // 4. With no snapshot left, the origin goes back to linear over NAME-real.
  if (wrapper && real && kept === 0) {
    const realTable = await dm.table(real.name);
    const same = wrapperLine !== undefined && realTable.length === 1 && realTable[0].type === wrapperLine.type && realTable[0].params === wrapperLine.params;
    if (!same) {
      await dm.load(wrapper.name, realTable);
      await dm.resume(wrapper.name, { skipLockfs: true });
      note(wrapper.name, 'restored-linear-table', `${wrapperLine ? `"${wrapperLine.type}"` : 'no table'} without any snapshot`);
    }
  }

  // 5. Leftovers of an interrupted prepare: NAME-real without NAME.
  if (!wrapper && real) {
    await dm.remove(real.name, { retry: true });
    note(real.name, 'removed', 'NAME-real without its origin (an interrupted prepare or release)');
  }
}

/** 2b and 2c: the COW mappings and their labels. */
async function recoverMappings(dm: DeviceMapper, originId: string, merge: MergeState | undefined, note: Note): Promise<void> {
  await removeOrphanMappings(dm, originId, merge, note);
  await resetStaleMergeLabels(dm, originId, merge, note);
}

/** 2b. COW mappings whose snapshot is gone (the merge's, in use by the origin, excepted): their labels cleared, the mappings removed. */
async function removeOrphanMappings(dm: DeviceMapper, originId: string, merge: MergeState | undefined, note: Note): Promise<void> {
  const now = (await scanGroups(dm)).get(originId);
  if (!now) return;
  const unused = { ...now, cows: now.cows.filter((c) => `${c.major}:${c.minor}` !== merge?.params.cow) };
  for (const { name, labelProblem } of await removeUnusedCowMappings(dm, unused)) {
    note(name, 'removed', `the COW mapping of a snapshot that no longer exists (${labelProblem ? `its label could not be cleared: ${labelProblem}` : 'its label cleared'})`);
  }
}

/** 2c. A label that says merging while no merge of its COW runs (a rollback that died before its start): back to active or tracking. */
async function resetStaleMergeLabels(dm: DeviceMapper, originId: string, merge: MergeState | undefined, note: Note): Promise<void> {
  const system = System.of(dm);
  for (const mapping of (await scanGroups(dm)).get(originId)?.cows ?? []) {
    if (`${mapping.major}:${mapping.minor}` === merge?.params.cow) continue;
    const cow = await mappedCow(dm, mapping.name);
    const label = cow ? await readCowLabel(system, cow).catch(() => undefined) : undefined;
    if (!cow || label?.state !== 'merging') continue;
    await updateCowLabel(system, cow, (current) => ({ ...current, state: restingState(current) }));
    note(mapping.name, 'relabelled', `its label said merging, but no merge runs (a rollback that died before it started): ${restingState(label)} again`);
  }
}

/**
 * The origin's wrapper made live: a half-loaded table cleared (first: a rollback's merge
 * table keeps its suspended snapshot from resuming), resumed if suspended.
 */
async function liveWrapper(dm: DeviceMapper, name: string, note: Note): Promise<DeviceInfo | undefined> {
  const wrapper = await dm.find(name);
  if (!wrapper) return undefined;
  if (wrapper.inactiveTable) {
    await dm.clear(wrapper.name);
    note(wrapper.name, 'cleared-inactive-table', 'a table loaded for a swap that never happened');
  }
  if (wrapper.suspended) {
    await dm.resume(wrapper.name);
    note(wrapper.name, 'resumed', 'it was suspended (a dmsnap run died during a freeze)');
  }
  return dm.info(wrapper.name);
}

/** Finishes a rollback's merge that is done; leaves one that runs (or stopped on an error). */
async function finishOrKeepMerge(owner: MergeOwner, merge: MergeState, note: Note): Promise<void> {
  if (!merge.done) {
    note(owner.name, 'kept', merge.failed ? 'its merge (a rollback) stopped on an error: left as it is' : 'its merge (a rollback) runs');
    return;
  }
  for (const removed of await finishMerge(owner, merge, async () => undefined)) {
    note(removed, 'removed', 'the snapshot merged back into its origin (the rollback is finished)');
  }
  note(owner.name, 'finished-merge', 'its rollback was done: it runs snapshot-origin or its linear table again');
}

type Note = (device: string, action: RecoveryActionKind, reason: string) => void;

/**
 * A snapshot left suspended with a live table: only a rollback suspends one (for the
 * handover of its exceptions), so one that died there left it so. Resumed, it is judged
 * like any other.
 */
async function resumeSuspendedSnapshot(dm: DeviceMapper, snap: TaggedDevice, note: Note): Promise<void> {
  const info = await dm.find(snap.name);
  if (!info?.suspended || !info.liveTable) return;
  if (info.inactiveTable) await dm.clear(snap.name);
  await dm.resume(snap.name, { udevFlags: HIDDEN_LAYER });
  note(snap.name, 'resumed', 'it was suspended (a dmsnap rollback died before the merge started)');
}

/** Why a snapshot device must go, or undefined when it is a working snapshot. */
async function snapshotProblem(
  dm: DeviceMapper,
  snap: TaggedDevice,
  real: DeviceInfo | undefined,
  originTracksReal: boolean,
): Promise<string | undefined> {
  const info = await dm.find(snap.name);
  if (!info) return undefined;
  if (!info.liveTable) return 'a snapshot device that was never activated (an interrupted snapshot)';
  if (info.suspended) return 'a suspended snapshot device (an interrupted snapshot)';
  const [line] = await dm.table(snap.name);
  if (line?.type !== 'snapshot' && line?.type !== 'snapshot-merge') return `a dmsnap snapshot device with a ${line?.type ?? 'missing'} table`;
  if (!real || !line.params.startsWith(`${devKey(real)} `)) return "a snapshot whose origin's NAME-real is gone";
  if (!originTracksReal) return 'a snapshot the origin does not feed (the swap to snapshot-origin never happened): it no longer shows one instant';
  const cow = parseSnapshotParams(line.params).cow;
  const device = parseDevKey(cow);
  const users = device ? holdersOf(device) : [];
  if (users.length > 1) return `its COW ${cow} is used by ${users.length} devices at once: what it holds cannot be trusted`;
  return undefined;
}
