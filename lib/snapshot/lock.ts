/**
 * One advisory lock per origin, so that two processes working on the same origin never
 * interleave. flock(2) locks vanish with their process, however it ends, so a crash never
 * leaves a stale lock behind.
 */
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DmsnapError } from '../errors';
import type { NativeBinding } from '../native';

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

/** The lock file of origin `name`. */
export function lockPath(name: string, options: LockOptions = {}): string {
  return join(options.lockDir ?? DEFAULT_LOCK_DIR, `${name}.lock`);
}

/** Takes the lock of `name`, waiting up to the timeout; returns the release function. */
export async function lockOrigin(binding: NativeBinding, name: string, options: LockOptions = {}): Promise<() => void> {
  const dir = options.lockDir ?? DEFAULT_LOCK_DIR;
  const timeoutMs = options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = lockPath(name, options);
  const fd = openSync(path, 'a', 0o600);
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
  return () => {
    if (!held) return;
    held = false;
    closeSync(fd); // closing the descriptor drops the lock
  };
}
