/**
 * Taking planned snapshots, of one origin or of a group at one instant: zero each COW
 * header, create each snapshot device, stage the tables in inactive slots, then the freeze
 * (suspend every origin, resume every snapshot, resume every origin) as one native call.
 * Any failure rolls back every origin to its previous table with the devices this call
 * created removed, and names the step (and the origin) that failed.
 */
import { DmsnapError } from '../errors';
import { devKey, holdersOf, type DevNumber } from '../system/stack';
import type { FreezeFailureFacts } from '../dm/freeze';
import { snapshot as snapshotTarget } from '../targets/snapshot';
import { snapshotOrigin } from '../targets/snapshot-origin';
import { sectors, type Sectors } from '../units';
import { HIDDEN_LAYER } from './context';
import { clearCowLabel, cowStartBytes, createCowMapping, removeCowMapping, writeFirstLabel } from './cow-mapping';
import { currentGroup } from './invariants';
import { System } from '../system/system';
import type { Origin } from './origin';
import type { SnapshotPlan } from './plan';
import { Snapshot } from './snapshot';
import { environmentFreezeSeam, type Step } from './steps';
import { formatTag } from './tags';
import { backOutSwap } from './back-out';

/** The snapshot to make. */
export interface SnapshotSpec {
  name: string;
  /** The id in the snapshot device's tag. */
  snapId: string;
  /** The COW file dmsnap created for it, if any. */
  cowFile: string | null;
  chunkSectors: Sectors;
  persistent: boolean;
  /** Tagged as a tracking snapshot (kept for changed-block tracking), taken about now: Unix seconds. */
  trackingSince: number | null;
}

/** How far a take got: what a rollback must undo, and the step to name. */
interface Progress {
  step: Step;
  /** The snapshot device exists. */
  created: boolean;
  /** snapshot-origin waits in the origin's inactive slot. */
  preloaded: boolean;
  /** The COW mapping exists (a persistent snapshot), with the label under it. */
  cowMapped: boolean;
}

type After = (step: Step) => Promise<void>;

/** One origin of a take: the snapshot `plan` was checked for, and its step hook. */
export interface TakeMember {
  origin: Origin;
  plan: SnapshotPlan;
  spec: SnapshotSpec;
  after: After;
}

/**
 * Takes the snapshots the members' plans were checked for, in one freeze: every COW made
 * ready and every table staged first, then (once `guardiansReady` resolves) every origin
 * suspended in the members' order, every snapshot resumed, every origin resumed. Any
 * failure rolls back every member: each origin ends on its previous table, live, and the
 * devices this call created are removed.
 */
export async function takeSnapshots(members: readonly TakeMember[], guardiansReady: Promise<void>): Promise<Snapshot[]> {
  const progress: Progress[] = members.map(() => ({ step: 'validate', created: false, preloaded: false, cowMapped: false }));
  const at = { member: 0 };
  try {
    const cows: (DevNumber & { path: string | null })[] = [];
    for (const [i, { origin, plan, spec, after }] of members.entries()) {
      at.member = i;
      cows.push(await prepareCow(origin, plan, spec, after, progress[i]));
      await stageTables(origin, plan, spec, cows[i], after, progress[i]);
    }
    // If this process dies while an origin is suspended, its guardian resumes it.
    await guardiansReady;
    const freezeMs = await freeze(members, progress, at);
    return members.map((member, i) => snapshotOf(member, cows[i], freezeMs));
  } catch (error) {
    for (let i = members.length - 1; i >= 0; i--) await rollBack(members[i].origin, members[i].spec, progress[i]);
    throw takeError(members, progress[at.member].step, at.member, error);
  }
}

/** The Snapshot a member's take made. */
function snapshotOf({ origin, plan, spec }: TakeMember, cow: DevNumber & { path: string | null }, freezeMs: number): Snapshot {
  const info = {
    name: spec.name,
    originName: origin.name,
    origin: { major: plan.real.major, minor: plan.real.minor },
    cow,
    cowDevice: { major: plan.cow.major, minor: plan.cow.minor, path: plan.cow.path },
    chunkSectors: spec.chunkSectors,
    persistent: spec.persistent,
    targetType: 'snapshot',
    snapId: spec.snapId,
    cowFile: spec.cowFile,
    trackingSince: spec.trackingSince === null ? null : new Date(spec.trackingSince * 1000),
  };
  return new Snapshot(origin.dm, origin, info, freezeMs);
}

/** The error of a failed take: which step of which member, and that everything was undone. */
function takeError(members: readonly TakeMember[], step: Step, failing: number, error: unknown): DmsnapError {
  const reason = error instanceof Error ? error.message : String(error);
  const code = error instanceof DmsnapError ? error.code : 'ERR_DMSNAP_SNAPSHOT_FAILED';
  const { origin, spec } = members[failing];
  if (members.length === 1) {
    return new DmsnapError(
      `snapshot "${spec.name}" of ${origin.name} failed at step "${step}": ${reason}. ` +
        `${origin.name} is running with its previous table and the devices this call created were removed`,
      code,
      { cause: error },
    );
  }
  const names = members.map((m) => m.origin.name).join(', ');
  return new DmsnapError(
    `group snapshot of ${names} failed at step "${step}" of ${origin.name} (snapshot "${spec.name}"): ${reason}. ` +
      `${names} are running with their previous tables and the devices this call created were removed`,
    code,
    { cause: error },
  );
}

/**
 * The COW made ready: its start zeroed (a stale header would revive an old or invalid
 * snapshot); for a persistent snapshot, the label written and synced, and the mapping
 * past it created. Returns the device the snapshot's table names.
 */
async function prepareCow(origin: Origin, plan: SnapshotPlan, spec: SnapshotSpec, after: After, progress: Progress): Promise<DevNumber & { path: string | null }> {
  progress.step = 'zero-cow';
  await plan.device.zeroStart(spec.persistent ? cowStartBytes(spec.chunkSectors) : plan.chunkBytes);
  await after(progress.step);
  if (spec.persistent) {
    progress.step = 'write-label';
    const subject = {
      origin: { id: origin.originId, name: origin.name, sizeSectors: origin.sizeSectors },
      snapshot: { id: spec.snapId, name: spec.name, chunkSectors: spec.chunkSectors, trackingSince: spec.trackingSince },
    };
    await writeFirstLabel(plan.device, subject, spec.trackingSince === null ? 'active' : 'tracking');
    await after(progress.step);
  }
  // Released before the table load: the kernel's own claim on the COW is exclusive too.
  plan.device.close();
  if (!spec.persistent) return { major: plan.cow.major, minor: plan.cow.minor, path: plan.cow.path };
  progress.step = 'create-cow-device';
  progress.cowMapped = true;
  const mapping = await createCowMapping(origin.dm, origin.originId, spec.snapId, spec.name, plan.cow, spec.chunkSectors).catch(async (error: unknown) => {
    // No mapping, no snapshot: the label must not stay behind.
    await clearCowLabel(System.of(origin.dm), plan.cow).catch(() => undefined);
    throw error;
  });
  await after(progress.step);
  return { major: mapping.major, minor: mapping.minor, path: origin.dm.devicePath(mapping.name) };
}

/** Everything before the freeze: nothing of it changes what the origin reads or writes. */
async function stageTables(origin: Origin, plan: SnapshotPlan, spec: SnapshotSpec, cow: DevNumber, after: After, progress: Progress): Promise<void> {
  const { dm } = origin;
  const size = sectors(origin.sizeSectors);
  const realKey = devKey(plan.real);
  progress.step = 'create-snapshot-device';
  await dm.create(spec.name, { uuid: formatTag({ originId: origin.originId, role: 'snap', snapId: spec.snapId, ...(spec.trackingSince === null ? {} : { trackingSince: spec.trackingSince }) }) });
  progress.created = true;
  await after(progress.step);

  // Both tables go into inactive slots at once; neither changes anything yet.
  progress.step = 'load-snapshot-table';
  const snapshotTable = [
    snapshotTarget({ length: size, origin: realKey, cow: devKey(cow), persistent: spec.persistent, chunkSectors: spec.chunkSectors }),
  ];
  const originLoad = plan.firstSnapshot ? dm.load(origin.name, [snapshotOrigin({ length: size, origin: realKey })]) : undefined;
  originLoad?.catch(() => undefined);
  try {
    const loaded = await dm.load(spec.name, snapshotTable);
    assertSoleUser(cow, plan.cow.path, loaded);
    // Under a mapping, the COW itself must be held by that mapping alone.
    if (devKey(cow) !== devKey(plan.cow)) assertSoleUser(plan.cow, plan.cow.path, cow);
  } finally {
    // Whatever happened to the snapshot table, know the state of the origin's slot.
    if (originLoad) progress.preloaded = await originLoad.then(() => true, () => false);
  }
  await after(progress.step);
  if (originLoad) {
    progress.step = 'load-origin-table';
    await originLoad;
    await after(progress.step);
  }
}

/**
 * The freeze: one native call on a thread of its own with memory locked (see
 * lib/dm/freeze.ts), so that nothing in it waits for the thread pool, udev or JavaScript.
 * If a step fails, it resumes every origin still suspended with its previous table itself.
 * Returns the milliseconds from the first suspend to the last resume.
 */
async function freeze(members: readonly TakeMember[], progress: Progress[], at: { member: number }): Promise<number> {
  const { dm } = members[0].origin;
  const batch = dm.udevBatch();
  let freezeMs: number;
  try {
    for (const p of progress) p.step = 'suspend-origin';
    const seam = environmentFreezeSeam(members.map((m) => m.origin.name));
    const group = members.map((m, i) => ({ origin: m.origin.name, snapshot: m.spec.name, originTableLoaded: progress[i].preloaded }));
    freezeMs = (await dm.freezeGroup(group, { batch, snapshotUdevFlags: HIDDEN_LAYER, ...(seam ? { seam } : {}) })).freezeMs;
    for (const p of progress) p.preloaded = false;
  } catch (error) {
    // The step and member the native freeze failed at, and what it left of each origin.
    const { freezeStep, freezeMember, freezeMembers } = error as Partial<FreezeFailureFacts>;
    if (freezeMember !== undefined) at.member = freezeMember;
    if (freezeStep) progress[at.member].step = freezeStep;
    freezeMembers?.forEach((facts, i) => {
      if (facts.swapped || facts.recovery?.cleared) progress[i].preloaded = false;
    });
    throw error;
  } finally {
    await batch.finish();
  }
  // Reported once the freeze is over: no JavaScript runs while an origin is suspended.
  for (const [i, { after }] of members.entries()) {
    at.member = i;
    for (const done of ['suspend-origin', 'resume-snapshot', 'resume-origin'] as const) {
      progress[i].step = done;
      await after(done);
    }
  }
  return freezeMs;
}

/** Undoes a failed snapshot: inactive table cleared, origin live, snapshot device and COW mapping gone. */
async function rollBack(origin: Origin, spec: SnapshotSpec, progress: Progress): Promise<void> {
  const { dm } = origin;
  const { name } = spec;
  await backOutSwap(dm, origin.name, { staged: progress.preloaded });
  if (progress.created) await dm.remove(name, { retry: true }).catch(() => undefined);
  if (progress.cowMapped) {
    const mapping = (await currentGroup(dm, origin.originId).catch(() => undefined))?.cows.find((c) => c.tag.snapId === spec.snapId);
    if (mapping) await removeCowMapping(dm, mapping).catch(() => undefined);
  }
  // A swap that went through but failed afterwards leaves snapshot-origin with no
  // snapshot: put the linear table back.
  const [line] = await dm.table(origin.name).catch(() => []);
  if (line?.type === 'snapshot-origin' && (await origin.snapshots()).length === 0) {
    await dm.load(origin.name, await dm.table(origin.realName)).catch(() => undefined);
    await dm.resume(origin.name, { skipLockfs: true }).catch(() => undefined);
  }
}

/**
 * The exclusive open before the zeroing cannot see another snapshot being made on the same
 * COW at the same moment: device-mapper tables share one claim on the devices they use. Once
 * the table is loaded, the COW's holders are the proof: this snapshot must be the only one.
 */
function assertSoleUser(cow: DevNumber, cowPath: string, snapshotDevice: DevNumber): void {
  const others = holdersOf(cow).filter((key) => key !== devKey(snapshotDevice));
  if (others.length > 0) {
    throw new DmsnapError(
      `the COW device ${cowPath} is also used by device ${others.join(', ')} (another snapshot made at the same time?); name an unused device`,
      'EBUSY',
    );
  }
}
