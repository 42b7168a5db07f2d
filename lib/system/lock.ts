/**
 * One advisory lock per origin, so that two processes working on the same origin never
 * interleave. flock(2) locks vanish with their process, however it ends, so a crash never
 * leaves a stale lock behind.
 *
 * The lock directory must be one only root controls (lib/safety/paths.ts): a directory
 * another user owns or can write to would let that user hold every lock, or swap lock
 * files so that two processes work on one origin. Lock files are opened without following
 * a symlink and must be regular files of ours with one link.
 */
import { closeSync, constants, fstatSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DmsnapError } from '../errors';
import type { NativeBinding } from '../native';
import { ensureTrustedDirectory } from '../safety/paths';

/** Where the per-origin lock files (NAME.lock) live by default. */
export const DEFAULT_LOCK_DIR = '/run/lock/dmsnap';
/** How long a lifecycle call waits by default for another process to release an origin's lock. */
export const DEFAULT_LOCK_TIMEOUT_MS = 30_000;
const POLL_MS = 25;

/** Where the per-origin locks live and how long to wait for one. */
export interface LockOptions {
  /** The directory of the lock files, created (mode 0700) if missing. Default /run/lock/dmsnap. */
  lockDir?: string;
  /**
   * How long to wait for a lock another process holds, in milliseconds, before failing with
   * ERR_DMSNAP_LOCKED. Default 30000.
   */
  lockTimeoutMs?: number;
}

/** A held lock: call it to release. */
export interface OriginLock {
  (): void;
  /** The lock file. */
  readonly path: string;
  /** "DEV:INO" of the lock file, so that another process can tell it is the same file. */
  readonly id: string;
}

/**
 * Checks (creating it, mode 0700, if missing) the lock directory; returns its path. Throws
 * ERR_DMSNAP_UNSAFE_LOCK_DIR if another user controls it or any of its parents.
 */
export function checkLockDir(options: LockOptions = {}): string {
  const dir = options.lockDir ?? DEFAULT_LOCK_DIR;
  return ensureTrustedDirectory(dir, {
    what: 'lock directory',
    advice: `remove it, or set DMSNAP_LOCK_DIR (the lockDir option) to a directory that root owns with mode 0700 (default ${DEFAULT_LOCK_DIR})`,
    code: 'ERR_DMSNAP_UNSAFE_LOCK_DIR',
    private: true,
  });
}

// libuv opens every file close-on-exec.
const LOCK_FLAGS = constants.O_RDONLY | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;

/** Opens (creating it, mode 0600) the lock file `path`: a regular file of ours, one link. */
function openLockFile(path: string): { fd: number; id: string } {
  const unsafe = (problem: string): never => {
    throw new DmsnapError(
      `unsafe lock file ${path}: ${problem}; remove it (nothing but dmsnap should write to the lock directory)`,
      'ERR_DMSNAP_UNSAFE_LOCK_FILE',
    );
  };
  let fd: number;
  try {
    fd = openSync(path, LOCK_FLAGS, 0o600);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') unsafe('it is a symbolic link');
    if (code === 'EISDIR') unsafe('it is a directory');
    throw error;
  }
  const st = fstatSync(fd, { bigint: true });
  const euid = BigInt(process.geteuid?.() ?? 0);
  const problem = !st.isFile()
    ? 'it is not a regular file'
    : st.uid !== euid
      ? `it is owned by uid ${st.uid}`
      : st.nlink !== 1n
        ? `it has ${st.nlink} hard links`
        : undefined;
  if (problem) {
    closeSync(fd);
    unsafe(problem);
  }
  return { fd, id: `${st.dev}:${st.ino}` };
}

/** Takes the lock of `name`, waiting up to the timeout; returns the release function. */
export async function lockOrigin(binding: NativeBinding, name: string, options: LockOptions = {}): Promise<OriginLock> {
  const timeoutMs = options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  const path = join(checkLockDir(options), `${name}.lock`);
  const { fd, id } = openLockFile(path);
  const deadline = Date.now() + timeoutMs;
  try {
    while (!binding.tryLock(fd)) {
      if (Date.now() >= deadline) {
        throw new DmsnapError(
          `another dmsnap process is working on "${name}" (lock ${path} held for ${timeoutMs} ms); ` +
            'wait for it to finish, or raise the lock timeout',
          'ERR_DMSNAP_LOCKED',
        );
      }
      await sleep(POLL_MS);
    }
  } catch (error) {
    closeSync(fd);
    throw error;
  }
  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    closeSync(fd); // closing the descriptor drops the lock
  };
  return Object.assign(release, { path, id });
}
