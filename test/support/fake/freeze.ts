/**
 * The fake kernel's control.freeze: the native sequence of native/freeze.cc (suspend every
 * origin — the native side does a group's at once — resume every snapshot, resume every origin; on a failure, drop the new
 * table of every origin still suspended and resume it), made of the fake control's own
 * ioctls, with the same result shape and the same test seams.
 */
import type { NativeControl, NativeDeviceInfo, NativeDeviceRef, NativeFreezeMember, NativeFreezeMemberResult, NativeFreezeResult } from '../../../lib/native';

type Failure = NonNullable<NativeFreezeResult['failure']>;
const STEPS = ['suspend-origin', 'resume-snapshot', 'resume-origin'] as const;

function describe(ref: NativeDeviceRef): string {
  if (ref.name) return ref.name;
  if (ref.uuid) return `uuid ${ref.uuid}`;
  return `${ref.major}:${ref.minor}`;
}

/** errno of a failed fake ioctl (the addon's errors carry it negative). */
function errnoOf(error: unknown): number {
  const errno = (error as { errno?: unknown }).errno;
  if (typeof errno !== 'number') throw error;
  return Math.abs(errno);
}

/** control.freeze of the fake: its arguments are the binding's, in the binding's order. */
export async function fakeFreeze(control: NativeControl, ...args: Parameters<NativeControl['freeze']>): Promise<NativeFreezeResult> {
  const [members, options] = args;
  const result: NativeFreezeResult = { freezeMs: 0, memoryLock: 'locked', members: members.map(() => ({})) };
  const fail = (step: number, member: number, errno: number): Failure => ({
    step: STEPS[step],
    member,
    errno,
    injected: errno === 0,
    ioctl: 'DM_DEV_SUSPEND',
    path: control.path,
    device: describe(step === 1 ? members[member][2] : members[member][0]),
  });
  const seam = (step: number, member: number) => {
    if (options.seamStep !== step || (options.seamMember ?? 0) !== member) return false;
    if (options.seamAction === 'kill') process.kill(process.pid, 'SIGKILL');
    return options.seamAction === 'fail';
  };
  const attempt = async (op: () => Promise<NativeDeviceInfo>): Promise<NativeDeviceInfo | number> => op().catch(errnoOf);
  const started = performance.now();
  // Every origin suspended (the native side suspends a group's origins at once: each is
  // tried, whatever happens to the others), then the first failure counts.
  const suspended = members.map(() => false);
  for (const [i, [origin, flags]] of members.entries()) {
    const done = await attempt(() => control.suspend(origin, flags));
    if (typeof done === 'number') result.failure ??= fail(0, i, done);
    else suspended[i] = true;
  }
  for (const i of members.keys()) if (!result.failure && seam(0, i)) result.failure = fail(0, i, 0);
  for (const [i, [, , snapshot, flags, eventNr]] of members.entries()) {
    if (result.failure) break;
    const snap = await attempt(() => control.resume(snapshot, flags, eventNr));
    if (typeof snap === 'number') {
      result.failure = fail(1, i, snap);
    } else {
      result.members[i].snapshot = snap;
      if (seam(1, i)) result.failure = fail(1, i, 0);
    }
  }
  for (const [i, [origin, , , , , flags, eventNr]] of members.entries()) {
    if (result.failure) break;
    const resumed = await attempt(() => control.resume(origin, flags, eventNr));
    if (typeof resumed === 'number') result.failure = fail(2, i, resumed);
    else result.members[i].origin = resumed;
  }
  if (result.failure) {
    for (const i of members.keys()) if (suspended[i] && !result.members[i].origin) await recover(control, members[i], result.members[i]);
  }
  result.freezeMs = performance.now() - started;
  return result;
}

/** An origin suspended when the freeze failed: its new table dropped, its previous one resumed. */
async function recover(control: NativeControl, member: NativeFreezeMember, out: NativeFreezeMemberResult): Promise<void> {
  const [origin, , , , , flags, eventNr, clearOnFailure] = member;
  const attempt = async (op: () => Promise<NativeDeviceInfo>): Promise<NativeDeviceInfo | number> => op().catch(errnoOf);
  const cleared = clearOnFailure ? await attempt(() => control.clear(origin)) : undefined;
  const resumed = await attempt(() => control.resume(origin, flags, eventNr));
  out.recovery = { cleared: cleared !== undefined && typeof cleared !== 'number', resumed: typeof resumed !== 'number' };
  if (typeof cleared === 'number') out.recovery.clearErrno = cleared;
  if (typeof resumed === 'number') out.recovery.resumeErrno = resumed;
  else out.origin = resumed;
}
