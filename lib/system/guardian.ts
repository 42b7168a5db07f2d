/**
 * dmsnap-guardian, the dead-man's switch of a freeze: a child process, started before
 * anything is written, that resumes the origin (by uuid, once it holds the origin's lock)
 * if this process dies while the origin is suspended. For a rollback it also resumes the
 * snapshot being handed over to the merge (a comma-separated list of uuids, undone in
 * order). A Guardian owns the child's pid and socket: nothing else sees them, and it is
 * finished exactly once.
 */
import { DmsnapError } from '../errors';
import { callNative, guardianExecutable, type NativeBinding } from '../native';
import type { OriginLock } from './lock';

/** How long the guardian may take to start and open the control node. */
const GUARDIAN_START_TIMEOUT_MS = 10_000;

interface Child {
  pid: number;
  fd: number;
}

export class Guardian {
  /** Resolves once the child runs its own program: descriptors opened later never reach it. */
  readonly spawned: Promise<void>;
  /** Resolves once the guardian watches this process; a freeze must wait for it. */
  readonly ready: Promise<void>;
  private readonly child: Promise<Child>;
  private finished: Promise<void> | undefined;

  private constructor(private readonly binding: NativeBinding, controlPath: string, uuids: string, lock: OriginLock) {
    const executable = guardianExecutable();
    const spawning = callNative(() => binding.spawnGuardian(executable, controlPath, uuids, lock.path, lock.id));
    this.spawned = spawning.then(() => undefined, cannotStart);
    this.child = spawning.then(async (child) => {
      await callNative(() => binding.awaitGuardianReady(child.pid, child.fd, executable, GUARDIAN_START_TIMEOUT_MS)).catch(cannotStart);
      return child;
    }, cannotStart);
    this.ready = this.child.then(() => undefined);
    // Looked at later, or not at all when the call fails first: never unhandled meanwhile.
    this.spawned.catch(() => undefined);
    this.ready.catch(() => undefined);
  }

  /** Starts the guardian of the devices whose uuids `uuids` lists (comma-separated, the origin first); it acts only under `lock`. */
  static start(binding: NativeBinding, controlPath: string, uuids: string, lock: OriginLock): Guardian {
    return new Guardian(binding, controlPath, uuids, lock);
  }

  /**
   * Tells the guardian the freeze is over and collects its exit; the same promise on every
   * call. Awaited, so that when a lifecycle call returns dmsnap holds no descriptor and no
   * child for it. Never rejects.
   */
  finish(): Promise<void> {
    this.finished ??= this.child.then(
      (child) =>
        callNative(() => this.binding.finishGuardian(child.pid, child.fd, true)).then(
          () => undefined,
          () => undefined,
        ),
      () => undefined,
    );
    return this.finished;
  }
}

function cannotStart(error: unknown): never {
  throw new DmsnapError(
    `cannot start dmsnap-guardian, which resumes the origin should dmsnap die while it is suspended: ${(error as Error).message}. ` +
      'Rebuild dmsnap (npm rebuild dmsnap) so that build/Release/dmsnap-guardian exists',
    'ERR_DMSNAP_GUARDIAN',
    { cause: error },
  );
}
