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

export const DEFAULT_LOCK_DIR = '/run/lock/dmsnap';
export const DEFAULT_LOCK_TIMEOUT_MS = 30_000;
const POLL_MS = 25;

export interface LockOptions {
  lockDir?: string;
  lockTimeoutMs?: number;
}

/** Takes the lock of `name`, waiting up to the timeout; returns the release function. */
export async function lockOrigin(binding: NativeBinding, name: string, options: LockOptions = {}): Promise<() => void> {
  const dir = options.lockDir ?? DEFAULT_LOCK_DIR;
  const timeoutMs = options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, `${name}.lock`);
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
