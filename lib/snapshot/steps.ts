/**
 * Named steps of taking and dropping a snapshot. Errors say which step failed; tests
 * can fail or kill the process right after a step (see `stepHook`).
 */
import { devOverride } from '../dev-overrides';

/**
 * The steps of Origin.snapshot, in order; the freeze runs from suspend-origin to
 * resume-origin. create-cow-file and attach-cow-file only with a COW file; write-label and
 * create-cow-device only for a persistent snapshot (see cow-mapping.ts).
 */
export type SnapshotStep =
  | 'create-cow-file'
  | 'attach-cow-file'
  | 'validate'
  | 'zero-cow'
  | 'write-label'
  | 'create-cow-device'
  | 'create-snapshot-device'
  | 'load-snapshot-table'
  | 'load-origin-table'
  | 'suspend-origin'
  | 'resume-snapshot'
  | 'resume-origin';

/**
 * The steps of Snapshot.drop, in order: the snapshot is removed while the origin runs; the
 * others only when it was the last, to swap the origin back to its linear table.
 */
export type DropStep = 'remove-snapshot' | 'load-linear-table' | 'suspend-origin' | 'resume-origin';

/**
 * The steps of a rollback (rollback.ts): the COW's label marked merging (a persistent
 * snapshot's), the merge table staged in NAME's inactive slot,
 * the snapshot suspended (the kernel hands its exceptions over only from a suspended
 * snapshot), NAME resumed with snapshot-merge (the merge starts), the snapshot resumed;
 * then, once the merge is done (merge.ts), NAME's final table loaded and swapped in and
 * the merged snapshot removed.
 */
export type RollbackStep =
  | 'mark-merging'
  | 'load-merge-table'
  | 'suspend-snapshot'
  | 'start-merge'
  | 'resume-merged-snapshot'
  | 'load-final-table'
  | 'swap-final-table'
  | 'remove-merged-snapshot';

/**
 * The steps of a detach (detach.ts): NAME removed, each label sealed, each snapshot
 * removed, NAME-real removed. Nothing is undone on a failure: what is left is what a kill
 * leaves, and recover's to repair.
 */
export type DetachStep = 'remove-origin' | 'seal-label' | 'remove-snapshot' | 'remove-real';

/** The steps of an incremental update of an image (incremental.ts); copy-extent comes after each extent. */
export type UpdateStep = 'take-snapshot' | 'mark-updating' | 'copy-extent' | 'sync-image' | 'mark-complete' | 'drop-previous';

/** A step of taking, dropping or rolling back to a snapshot, of a detach, or of an update. */
export type Step = SnapshotStep | DropStep | RollbackStep | DetachStep | UpdateStep;

/**
 * Called after each step completes. Only for tests: a hook that throws simulates a
 * failure right after that step. The steps of the freeze (suspend-origin,
 * resume-snapshot, resume-origin) run in one native call, so their hooks are called once
 * it is over; the environment seams below act inside it. In a group snapshot, `origin`
 * names the origin whose step it is.
 */
export type StepHook = (step: Step, origin?: string) => void | Promise<void>;

/**
 * The hook from the environment, read only when DMSNAP_TEST_SEAMS=1 (a test-only seam):
 * DMSNAP_TEST_FAIL_AFTER=STEP throws after STEP; DMSNAP_TEST_KILL_AFTER=STEP kills the
 * process with SIGKILL right after STEP, to prove what survives a crash. In a group
 * snapshot, DMSNAP_TEST_SEAM_ORIGIN=NAME acts on NAME's step only (default: the first
 * origin's).
 */
export function environmentStepHook(): StepHook | undefined {
  if (devOverride('DMSNAP_TEST_SEAMS') !== '1') return undefined;
  const failAfter = process.env.DMSNAP_TEST_FAIL_AFTER;
  const killAfter = process.env.DMSNAP_TEST_KILL_AFTER;
  const only = process.env.DMSNAP_TEST_SEAM_ORIGIN;
  if (!failAfter && !killAfter) return undefined;
  return (step, origin) => {
    if (only && origin !== undefined && origin !== only) return;
    if (step === killAfter) process.kill(process.pid, 'SIGKILL');
    if (step === failAfter) throw new Error(`test seam: failing after step "${step}"`);
  };
}

/**
 * The environment seam for a step inside the freeze (suspend-origin, resume-snapshot),
 * where no JavaScript runs: the native freeze itself fails or SIGKILLs the process
 * right after that step. Undefined unless DMSNAP_TEST_SEAMS=1 names one.
 */
export function environmentFreezeSeam(origins: readonly string[]): { step: 'suspend-origin' | 'resume-snapshot'; action: 'fail' | 'kill'; member: number } | undefined {
  if (devOverride('DMSNAP_TEST_SEAMS') !== '1') return undefined;
  const only = process.env.DMSNAP_TEST_SEAM_ORIGIN;
  const member = only ? origins.indexOf(only) : 0;
  if (member < 0) return undefined;
  const inFreeze = (step: string | undefined) => (step === 'suspend-origin' || step === 'resume-snapshot' ? step : undefined);
  const kill = inFreeze(process.env.DMSNAP_TEST_KILL_AFTER);
  if (kill) return { step: kill, action: 'kill', member };
  const fail = inFreeze(process.env.DMSNAP_TEST_FAIL_AFTER);
  return fail ? { step: fail, action: 'fail', member } : undefined;
}

/** Runs the test hooks (the caller's and the environment's) after each step; `origin` for a group snapshot's. */
export function stepRunner(onStep: StepHook | undefined, origin?: string): (step: Step) => Promise<void> {
  const hooks = [onStep, environmentStepHook()].filter((h): h is StepHook => h !== undefined);
  return async (step) => {
    for (const hook of hooks) await hook(step, origin);
  };
}
