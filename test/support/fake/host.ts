/**
 * The rest of the system the addon reaches: mounts (an exclusive open of the source),
 * the guardian (spawned and finished, never run: the fake kernel dies with the test),
 * and advisory locks on lock files.
 */
import { closeSync, constants, existsSync, fstatSync, ftruncateSync, openSync } from 'node:fs';
import type { NativeBinding } from '../../../lib/native';
import { failOpen } from './block-devices';
import { EBUSY, ECHILD, EINVAL, ENOENT, EPERM, ESTALE } from './constants';
import type { FakeState } from './model';
import type { FakeGuardian } from './system';
import { openForTest } from './opens';

type HostCalls = Pick<NativeBinding, 'mount' | 'unmount' | 'preallocateFile' | 'spawnGuardian' | 'awaitGuardianReady' | 'finishGuardian' | 'tryLock' | 'unlock'>;

/** A turn of the event loop, as a call run on a pool thread takes. */
const poolTurn = () => new Promise((resolve) => setImmediate(resolve));

/** The open file behind a descriptor ("DEV:INO"), or undefined once it is closed. */
function fileOf(fd: number): string | undefined {
  try {
    const st = fstatSync(fd, { bigint: true });
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

/**
 * flock(fd, LOCK_EX | LOCK_NB) within this process: a file is locked by one descriptor
 * until it is unlocked or closed (which fstat sees as the descriptor no longer naming it).
 */
function tryLock(s: FakeState, fd: number): boolean {
  const file = fileOf(fd);
  if (file === undefined) throw Object.assign(new Error(`flock: bad file descriptor ${fd}`), { code: 'EBADF' });
  const holder = s.locks.get(file);
  if (holder !== undefined && holder !== fd && fileOf(holder) === file) return false;
  s.locks.set(file, fd);
  return true;
}

function unlock(s: FakeState, fd: number): void {
  const file = fileOf(fd);
  if (file !== undefined && s.locks.get(file) === fd) s.locks.delete(file);
}

/** The fake's guardians get pids from here on. */
const FIRST_PID = 40000;

/** The guardian with this pid, if it was started and is not finished. */
function running(s: FakeState, pid: number): FakeGuardian | undefined {
  const guardian = s.system.guardianLog[pid - FIRST_PID];
  return guardian && !guardian.finished ? guardian : undefined;
}

/** The binding's mount, guardian and lock functions. */
export function hostCalls(s: FakeState): HostCalls {
  return {
    async mount(source, target) {
      if (s.system.unprivileged) failOpen(EPERM, 'mount', target);
      if (s.system.mounts.has(target)) failOpen(EBUSY, 'mount', target);
      const close = openForTest(s, source, { exclusive: true });
      s.mountClosers.set(target, close);
      s.system.mounts.set(target, source);
    },
    async unmount(target) {
      const close = s.mountClosers.get(target);
      if (!close) return failOpen(EINVAL, 'umount2', target);
      close();
      s.mountClosers.delete(target);
      s.system.mounts.delete(target);
    },
    async preallocateFile(path, inode, length) {
      // The host's own file (a COW file the library made): checked as the kernel would, grown, not written.
      const fd = openSync(path, constants.O_WRONLY | constants.O_NOFOLLOW);
      try {
        const st = fstatSync(fd);
        if (!st.isFile() || st.ino !== inode) failOpen(ESTALE, 'open', path);
        if (st.size < length) ftruncateSync(fd, length);
        s.system.preallocated.set(path, length);
      } finally {
        closeSync(fd);
      }
    },
    async spawnGuardian(executable, controlPath, originUuid, lockPath, lockId) {
      // A spawn takes a turn of the loop on a pool thread, as the real one does.
      s.spawning++;
      await poolTurn();
      s.spawning--;
      if (!existsSync(executable)) return failOpen(ENOENT, 'posix_spawn', executable);
      if (!s.system.dmLoaded) return failOpen(ENOENT, 'open', controlPath);
      s.system.guardians++;
      const pid = FIRST_PID + s.system.guardianLog.length;
      s.system.guardianLog.push({ pid, originUuid, lockPath, lockId });
      return { pid, fd: pid };
    },
    async awaitGuardianReady(pid) {
      if (!running(s, pid)) failOpen(ECHILD, 'waitpid', String(pid));
    },
    async finishGuardian(pid, _fd, done) {
      // A child is reaped once: finishing it again finds nothing to wait for.
      const guardian = running(s, pid);
      if (!guardian) return failOpen(ECHILD, 'waitpid', String(pid));
      guardian.finished = done ? 'done' : 'aborted';
      // The real call waits for the child on a pool thread: it ends a turn of the loop later.
      await poolTurn();
      s.system.guardians--;
      return done ? 0 : 1;
    },
    tryLock: (fd) => tryLock(s, fd),
    unlock: (fd) => unlock(s, fd),
  };
}

/**
 * A guardian executable for lib to name when no addon is built (lib looks for the guardian
 * next to the addon): the fake only checks that it exists, and never runs it.
 */
export const FAKE_GUARDIAN = __filename;
