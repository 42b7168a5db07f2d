/**
 * Snapshots of several origins at one instant (a consistency group), and of one origin,
 * which is a group of one. Everything that can be done before the freeze is done for every
 * origin: each origin's lock (taken in one global order, by name, so that two groups never
 * wait for each other), its guardian, its checks and its COW. Then the application's
 * pre-freeze hooks, one freeze for all (take.ts), and the post-thaw hooks, which run after
 * every successful pre-freeze, whether the snapshot was taken or not. A failure anywhere
 * leaves every origin on its previous table.
 */
import type { Guardian } from '../system/guardian';
import type { OriginLock } from '../system/lock';
import { System } from '../system/system';
import { FreezeHooks, type FreezeHookOptions } from '../system/hooks';
import { checkDeviceName } from '../dm/names';
import { MAX_FREEZE_MEMBERS } from '../dm/freeze';
import { DmsnapError } from '../errors';
import { checkChunkSectors } from '../targets/snapshot';
import { check, checkPath } from '../validate';
import { CowRecords } from '../system/cow-records';
import { checkCowFileOptions, detachCowLoop, discardCowFile, provideCowFile, type CowFileLease, type CowFileOptions } from './cow-file';
import { mergeState } from './merge';
import type { Origin, SnapshotOptions } from './origin';
import { planSnapshot, type SnapshotPlan } from './plan';
import type { Snapshot } from './snapshot';
import { stepRunner, type StepHook } from './steps';
import { takeSnapshots, type SnapshotSpec, type TakeMember } from './take';
import { newSnapId } from './tags';

/** One origin of a group snapshot and the options of its snapshot (as Origin.snapshot takes them). */
export interface GroupMember extends Omit<SnapshotOptions, 'onStep' | 'hooks'> {
  origin: Origin;
}

/** Options of snapshotGroup. */
export interface GroupSnapshotOptions {
  /**
   * The application's hooks around the freeze: `preFreeze` runs before anything is
   * written (a failure or a timeout aborts with nothing changed), `postThaw` after the
   * freeze, also when the snapshot failed (see FreezeHookOptions). Default: none.
   */
  hooks?: FreezeHookOptions;
  /** @internal Test hook called after each step, with the origin whose step it is. */
  onStep?: StepHook;
}

/** One member while the group is taken: what must be released whatever happens. */
interface Held {
  origin: Origin;
  spec: SnapshotSpec;
  cowFile: CowFileOptions | undefined;
  options: GroupMember;
  after: (step: Parameters<StepHook>[0]) => Promise<void>;
  lock?: OriginLock;
  guardian?: Guardian;
  plan?: SnapshotPlan;
  lease?: CowFileLease;
}

/**
 * Takes one snapshot of each member's origin, all at one instant: every origin is suspended
 * (its filesystem flushed and frozen) before any is resumed. Returns the snapshots in the
 * members' order. Rejects with nothing changed on any failure (the error names the origin
 * and the step); when only the post-thaw hooks failed, the snapshots stand and the error
 * (ERR_DMSNAP_HOOK_FAILED) carries them as `snapshots`.
 */
export async function snapshotGroup(members: readonly GroupMember[], options: GroupSnapshotOptions = {}): Promise<Snapshot[]> {
  const held = checkGroup(members, options);
  const hooks = await FreezeHooks.load(options.hooks ?? { hookDir: false });
  // One global order: two groups sharing origins take their locks the same way round.
  const ordered = [...held].sort((a, b) => (a.origin.name < b.origin.name ? -1 : a.origin.name > b.origin.name ? 1 : 0));
  const context = { origins: members.map((m) => m.origin.name), snapshots: held.map((h) => h.spec.name) };
  let snaps: Snapshot[] | undefined;
  let thawError: unknown;
  try {
    await prepareMembers(ordered);
    await hooks.preFreeze(context);
    try {
      snaps = await takeSnapshots(ordered as TakeMember[], Promise.all(ordered.map((h) => h.guardian!.ready)).then(() => undefined));
    } finally {
      thawError = await hooks.postThaw(context).then(() => undefined, (error: unknown) => error ?? new Error('post-thaw failed'));
    }
  } catch (error) {
    if (thawError) (error as Error).message += `; and then: ${(thawError as Error).message}`;
    throw error;
  } finally {
    await releaseMembers(ordered, snaps !== undefined);
  }
  const result = held.map((h) => snaps![ordered.indexOf(h)]);
  if (thawError) {
    throw Object.assign(
      new DmsnapError(`${result.map((s) => s.name).join(', ')} taken, but ${(thawError as Error).message}`, 'ERR_DMSNAP_HOOK_FAILED', { cause: thawError }),
      { snapshots: result },
    );
  }
  return result;
}

/** Validates the group and each member's options, before anything is locked or written. */
function checkGroup(members: readonly GroupMember[], options: GroupSnapshotOptions): Held[] {
  check(Array.isArray(members) && members.length >= 1 && members.length <= MAX_FREEZE_MEMBERS, 'members', `an array of 1 to ${MAX_FREEZE_MEMBERS} { origin, cow | cowFile, … }`, members);
  check(typeof options === 'object' && options !== null, 'options', 'an object', options);
  const held = members.map((member, i): Held => {
    check(typeof member === 'object' && member !== null && typeof member.origin?.name === 'string', `members[${i}]`, 'an object with an origin', member);
    const { spec, cowFile } = checkSnapshotOptions(member, member.origin.name);
    return { origin: member.origin, spec, cowFile, options: member, after: stepRunner(options.onStep, members.length > 1 ? member.origin.name : undefined) };
  });
  const twice = (what: string, values: (string | undefined)[]) => {
    const seen = values.filter((v, i) => v !== undefined && values.indexOf(v) !== i);
    check(seen.length === 0, 'members', `distinct: each origin, snapshot name and COW once (${what} ${seen[0]} is named twice)`, members.length);
  };
  twice('origin', held.map((h) => h.origin.name));
  twice('snapshot', held.map((h) => h.spec.name));
  twice('COW', held.map((h) => h.options.cow ?? h.cowFile?.path));
  check(held.every((h) => h.origin.dm === held[0].origin.dm), 'members', 'origins opened with one DeviceMapper', members);
  return held;
}

/** Locks, guardians, checks and COWs of every member, in order: nothing written yet but COW files dmsnap creates. */
async function prepareMembers(ordered: Held[]): Promise<void> {
  for (const h of ordered) {
    const system = System.of(h.origin.dm);
    h.lock = await system.lock(h.origin.name, h.origin.lockOptions);
    // Each guardian gets ready while the checks run: it must be there before the freeze.
    h.guardian = system.startGuardian(h.origin.dm.controlPath, h.origin.originUuid, h.lock);
  }
  // Descriptors opened before a guardian runs its own program would reach it: the COWs are
  // opened once every guardian has spawned.
  const spawned = Promise.all(ordered.map((h) => h.guardian!.spawned)).then(() => undefined);
  spawned.catch(() => undefined);
  for (const h of ordered) {
    const { origin, spec } = h;
    if (await mergeState(origin.dm, origin.name)) {
      throw new DmsnapError(`${origin.name} is merging a snapshot back (a rollback): a snapshot now would read a device half merged; "dmsnap rollback ${origin.name} --wait" waits for it`, 'ERR_DMSNAP_MERGING');
    }
    if (h.cowFile) {
      await spawned;
      const request = { snapId: spec.snapId, snapshotName: spec.name, chunkSectors: spec.chunkSectors, lockOptions: origin.lockOptions };
      h.lease = await provideCowFile(System.of(origin.dm), origin, request, h.cowFile, h.after);
    }
    const cow = h.lease?.device ?? h.options.cow!;
    const request = { cow, name: spec.name, chunkSectors: spec.chunkSectors, forceWipe: h.options.forceWipe === true, persistent: spec.persistent };
    h.plan = await planSnapshot(origin, request, spawned);
    await h.after('validate');
  }
}

/** Releases what each member holds: its COW open, a COW file not used, its guardian, its lock. */
async function releaseMembers(ordered: Held[], taken: boolean): Promise<void> {
  for (const h of ordered) {
    h.plan?.device.close();
    // The snapshot's table holds the loop device now; without a snapshot, it goes.
    h.lease?.release();
    if (h.lease && !taken) await discardLease(System.of(h.origin.dm), h.origin, h.lease);
  }
  await Promise.all(ordered.map((h) => h.guardian?.finish()));
  for (const h of [...ordered].reverse()) h.lock?.();
}

/** Validates one member's snapshot options: the snapshot's name, chunk size and persistence, and its COW file. */
export function checkSnapshotOptions(options: Omit<SnapshotOptions, 'onStep' | 'hooks'>, originName: string): { spec: SnapshotSpec; cowFile?: CowFileOptions } {
  check(typeof options === 'object' && options !== null, 'options', 'an object with { cow } or { cowFile }', options);
  check((options.cow === undefined) !== (options.cowFile === undefined), 'options', 'an object with either cow (a device) or cowFile (a file), not both', options);
  const cowFile = options.cowFile === undefined ? undefined : checkCowFileOptions(options.cowFile);
  if (!cowFile) checkPath(options.cow, 'cow');
  const chunkSectors = checkChunkSectors(options.chunkSectors ?? 32);
  const persistent = options.persistent ?? true;
  check(typeof persistent === 'boolean', 'persistent', 'a boolean', persistent);
  const name = options.name ?? `${originName}-snap`;
  checkDeviceName(name, 'name');
  const tracking = options.tracking ?? false;
  check(typeof tracking === 'boolean', 'tracking', 'a boolean', tracking);
  check(!tracking || persistent, 'tracking', 'false for a transient snapshot (its exceptions are not on the COW)', tracking);
  const spec = { name, snapId: newSnapId(), cowFile: cowFile?.path ?? null, chunkSectors, persistent, trackingSince: tracking ? Math.floor(Date.now() / 1000) : null };
  return cowFile ? { spec, cowFile } : { spec };
}

/** Removes the COW file of a snapshot that was not taken (its loop device detached, the file deleted). */
async function discardLease(system: System, origin: Origin, lease: CowFileLease): Promise<void> {
  await detachCowLoop(system, lease.record);
  discardCowFile(CowRecords.of(origin.lockOptions), lease.record);
}
