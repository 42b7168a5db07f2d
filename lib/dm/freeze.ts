/**
 * The freeze of a snapshot, or of a group of snapshots of several origins at one instant,
 * in one native call: suspend the origins (flushing and freezing their filesystems),
 * resume the snapshots, resume the origins with their new tables. It runs on
 * a thread of its own with memory locked, so that neither the application's I/O on the
 * frozen filesystem (which can fill libuv's thread pool) nor a page fault can keep the
 * origin suspended; a failed step makes the native side resume the origin with its
 * previous table before it reports.
 */
import { errnoCode } from '../errors';
import { makeSyscallError, type NativeControl, type NativeDeviceInfo, type NativeFreezeMember, type NativeFreezeMemberResult, type NativeFreezeOptions, type NativeFreezeResult, type NativeBinding } from '../native';
import { suspendFlags as flagsOf, toDeviceInfo, toNativeRef } from './convert';
import type { DeviceInfo, DeviceRef } from './types';
import type { UdevBatch } from './udev';

/** The most origins one freeze takes (native/freeze.h). */
export const MAX_FREEZE_MEMBERS = 16;

/** A step inside the freeze. */
export type FreezeStep = 'suspend-origin' | 'resume-snapshot' | 'resume-origin';

/** Options of DeviceMapper.freeze and freezeGroup. */
export interface FreezeOptions {
  /** Every resume shares this batch's udev cookie; `batch.finish()` waits for udev afterwards. */
  batch: UdevBatch;
  /** Extra udev flags of the snapshots' resumes (see UdevFlags). */
  snapshotUdevFlags?: number;
  /** Suspend the origins without freezing their filesystems (DM_SKIP_LOCKFS_FLAG). */
  skipLockfs?: boolean;
  /** (freeze) A new table for the origin waits in its inactive slot: a failed freeze drops it. */
  originTableLoaded?: boolean;
  /** @internal Test seam (DMSNAP_TEST_SEAMS=1 only): fail or SIGKILL right after a step of a member (default 0), inside the freeze. */
  seam?: { step: 'suspend-origin' | 'resume-snapshot'; action: 'fail' | 'kill'; member?: number };
}

/** One origin of DeviceMapper.freezeGroup and its new snapshot. */
export interface GroupFreezeMember<Ref> {
  origin: Ref;
  snapshot: Ref;
  /** A new table for the origin waits in its inactive slot: a failed freeze drops it. */
  originTableLoaded?: boolean;
}

/** What a successful freeze did (`Info`: the device state as the caller reports it). */
export interface FreezeOutcome<Info = NativeDeviceInfo> {
  /** How long the origin was suspended, measured natively (CLOCK_MONOTONIC), in milliseconds. */
  freezeMs: number;
  /** Whether memory was locked during the freeze (see NativeFreezeResult.memoryLock). */
  memoryLock: NativeFreezeResult['memoryLock'];
  /** The snapshot and the origin after their resumes. */
  snapshot: Info;
  origin: Info;
}

/** What a successful group freeze did. */
export interface GroupFreezeOutcome<Info = NativeDeviceInfo> {
  /** From the first origin's suspend to the last one's resume, measured natively, in milliseconds. */
  freezeMs: number;
  memoryLock: NativeFreezeResult['memoryLock'];
  /** Each member's snapshot and origin after their resumes, in order. */
  members: { snapshot: Info; origin: Info }[];
}

/** What a failed freeze left of one member. */
export interface FreezeMemberFacts {
  /** The origin runs with its new table (its resume came before the failure): its snapshot is live. */
  swapped: boolean;
  /** Set when the origin was suspended at the failure: whether its new table was dropped and it runs again. */
  recovery?: NonNullable<NativeFreezeMemberResult['recovery']>;
}

/** A failed freeze: which step of which member, and what became of each origin. */
export interface FreezeFailureFacts {
  /** The step that failed (the one after which a test seam failed). */
  freezeStep: FreezeStep;
  /** The member it failed on (0 for a single freeze). */
  freezeMember: number;
  /** The first member's recovery (a single freeze's), when one was needed. */
  recovery?: FreezeMemberFacts['recovery'];
  /** One per member, in order. */
  freezeMembers: FreezeMemberFacts[];
}

/**
 * Runs the freeze of `group` (suspended in this order) and turns a failed step into a
 * DmError (or the test seam's Error) carrying FreezeFailureFacts.
 */
export async function runFreeze(
  control: NativeControl,
  constants: NativeBinding['constants'],
  group: readonly GroupFreezeMember<DeviceRef>[],
  options: FreezeOptions,
): Promise<GroupFreezeOutcome<DeviceInfo>> {
  if (!Array.isArray(group) || group.length < 1 || group.length > MAX_FREEZE_MEMBERS) {
    throw new RangeError(`a freeze takes 1 to ${MAX_FREEZE_MEMBERS} origins; got ${Array.isArray(group) ? group.length : typeof group}`);
  }
  const members = group.map((m) => ({ origin: toNativeRef(m.origin), snapshot: toNativeRef(m.snapshot), originTableLoaded: m.originTableLoaded === true }));
  const suspendFlags = flagsOf({ skipLockfs: options.skipLockfs }, constants);
  const { batch } = options;
  const slots = members.map(() => ({ snapshot: batch.reserve(options.snapshotUdevFlags ?? 0), origin: batch.reserve(0) }));
  const tuples: NativeFreezeMember[] = members.map((m, i) => [m.origin, suspendFlags, m.snapshot, 0, slots[i].snapshot.eventNr, 0, slots[i].origin.eventNr, m.originTableLoaded === true]);
  const native: NativeFreezeOptions = {};
  if (options.seam) {
    native.seamStep = options.seam.step === 'suspend-origin' ? 0 : 1;
    native.seamMember = options.seam.member ?? 0;
    native.seamAction = options.seam.action;
  }
  let result: NativeFreezeResult;
  try {
    result = await control.freeze(tuples, native);
  } catch (error) {
    for (const slot of slots) (slot.snapshot.settle(), slot.origin.settle());
    throw error;
  }
  result.members.forEach((member, i) => {
    slots[i].snapshot.settle(member.snapshot);
    slots[i].origin.settle(member.origin);
    for (const info of [member.snapshot, member.origin]) if (info) batch.ensureNodeLater(info.name, info.major, info.minor);
  });
  if (!result.failure) {
    const members = result.members.map((m) => ({ snapshot: toDeviceInfo(m.snapshot!, constants), origin: toDeviceInfo(m.origin!, constants) }));
    return { freezeMs: result.freezeMs, memoryLock: result.memoryLock, members };
  }
  throw freezeError(result);
}

function freezeError(result: NativeFreezeResult): Error {
  const { step, member, injected, errno, ioctl, path, device } = result.failure!;
  const error: Error = injected
    ? new Error(`test seam: failing after step "${step}"${result.members.length > 1 ? ` of member ${member}` : ''}`)
    : makeSyscallError({ errno, syscall: 'ioctl', ioctl, path, device });
  const stuck = result.members.filter((m) => m.recovery && !m.recovery.resumed);
  if (stuck.length > 0) {
    error.message += `; resuming ${stuck.length === 1 && result.members.length === 1 ? 'the origin' : `${stuck.length} origin(s)`} afterwards failed too (${errnoCode(stuck[0].recovery!.resumeErrno ?? 0)})`;
  }
  const freezeMembers: FreezeMemberFacts[] = result.members.map((m) => ({ swapped: m.origin !== undefined && !m.recovery, ...(m.recovery ? { recovery: m.recovery } : {}) }));
  const first = result.members[0]?.recovery;
  const facts: FreezeFailureFacts = { freezeStep: step, freezeMember: member, ...(first ? { recovery: first } : {}), freezeMembers };
  return Object.assign(error, facts);
}
