/**
 * Loop devices on the fake kernel (drivers/block/loop.c): /dev/loop-control's
 * LOOP_CTL_GET_FREE, LOOP_CONFIGURE of a file from FakeSystem.files (O_NOFOLLOW: ELOOP
 * for a symlink, EISDIR for a directory), LOOP_GET_STATUS64, LOOP_SET_CAPACITY and
 * LOOP_CLR_FD. Autoclear (a bound loop nothing holds any more is detached) is in opens.ts.
 */
import { lstatSync } from 'node:fs';
import { splitDev } from '../../../lib/system/stack';
import { makeSyscallError, type NativeBinding, type NativeLoopStatus } from '../../../lib/native';
import { openHandle } from './block-devices';
import { EACCES, EBUSY, EISDIR, ELOOP, ENOENT, ENXIO, FAKE_FILES_DEV, LOOP_CONSTANTS, LOOP_MAJOR } from './constants';
import type { FakeLoop, FakeState } from './model';
import { openCount, unbindLoop } from './opens';
import { keyOf, loopByNumber } from './paths';
import type { FakeFile } from './system';

const CONTROL = '/dev/loop-control';
const ATTEMPTS = 8;
const { LO_FLAGS_AUTOCLEAR, LO_FLAGS_DIRECT_IO } = LOOP_CONSTANTS as Record<string, number>;

function fail(errno: number, syscall: string, path: string, ioctl?: string): never {
  throw makeSyscallError({ errno, syscall, path, ...(ioctl ? { ioctl } : {}) });
}

/** FakeSystem.addFile. */
let inodes = 1000;
export function addFile(s: FakeState, path: string, sizeBytes: number, kind: FakeFile['kind'] = 'file'): FakeFile {
  const file: FakeFile = { kind, sizeBytes, inode: inodes++ };
  s.system.files.set(path, file);
  return file;
}

/**
 * A file of the host's own filesystem, for the files the library creates itself (COW
 * files): read through lstat, so the fake serves what is really there.
 */
function hostFile(path: string): FakeFile | undefined {
  try {
    const st = lstatSync(path, { bigint: true });
    const kind = st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'directory' : 'file';
    return { kind, sizeBytes: Number(st.size), inode: Number(st.ino), dev: splitDev(st.dev), hostPath: path };
  } catch {
    return undefined;
  }
}

/** open(path, O_RDWR | O_NOFOLLOW) of the backing file. */
function openBacking(s: FakeState, path: string): FakeFile {
  const file = s.system.files.get(path) ?? (path.startsWith('/') ? hostFile(path) : undefined);
  if (!file) return fail(ENOENT, 'open', path);
  if (file.kind === 'symlink') return fail(ELOOP, 'open', path);
  if (file.kind === 'directory') return fail(EISDIR, 'open', path);
  return file;
}

/** LOOP_CTL_GET_FREE: the lowest unbound loop device, added if it does not exist yet. */
function getFree(s: FakeState): number {
  let minor = 0;
  while (loopByNumber(s, LOOP_MAJOR, minor)) minor++;
  s.loopNodes.add(minor);
  return minor;
}

/** A bound loop's size: the file's, in whole sectors. */
const loopSize = (file: FakeFile) => Math.floor(file.sizeBytes / 512) * 512;

function bind(s: FakeState, minor: number, file: FakeFile, tag: string, directIo: boolean): FakeLoop {
  const path = `/dev/loop${minor}`;
  const dev = { key: keyOf(LOOP_MAJOR, minor), major: LOOP_MAJOR, minor };
  // Where the backing filesystem cannot do direct I/O the kernel clears the flag.
  const flags = LO_FLAGS_AUTOCLEAR | (directIo && s.system.loopDirectIo ? LO_FLAGS_DIRECT_IO : 0);
  const loop: FakeLoop = { dev, file, tag: tag.slice(0, LOOP_CONSTANTS.LO_NAME_SIZE! - 1), flags };
  s.loops.set(path, loop);
  s.system.blockDevices.set(path, { sizeBytes: loopSize(file), logicalSectorSize: 512, physicalSectorSize: 512, readOnly: false, major: LOOP_MAJOR, minor });
  return loop;
}

/** The bound loop at `device` (ENOENT: no such node; ENXIO: nothing attached). */
function boundLoop(s: FakeState, device: string, ioctl: string): { loop?: FakeLoop; minor: number } {
  const number = /^\/dev\/loop(\d+)$/.exec(device);
  const minor = number ? Number(number[1]) : -1;
  const bound = minor >= 0 && loopByNumber(s, LOOP_MAJOR, minor);
  if (!bound && !(minor >= 0 && s.loopNodes.has(minor))) return fail(ENOENT, 'open', device);
  if (!bound) return fail(ENXIO, 'ioctl', device, ioctl);
  return { loop: s.loops.get(device), minor };
}

type LoopCalls = Pick<NativeBinding, 'loopConstants' | 'loopAttach' | 'loopStatus' | 'loopSetCapacity' | 'loopDetach'>;

export function loopCalls(s: FakeState): LoopCalls {
  return {
    loopConstants: LOOP_CONSTANTS,
    async loopAttach(path, tag, directIo) {
      const file = openBacking(s, path);
      if (s.system.unprivileged) fail(EACCES, 'open', CONTROL);
      let device = '';
      for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
        const minor = getFree(s);
        device = `/dev/loop${minor}`;
        if (s.system.loopRaces > 0) {
          // Another process binds this number first: LOOP_CONFIGURE answers EBUSY.
          s.system.loopRaces--;
          s.system.blockDevices.set(device, { sizeBytes: 0, logicalSectorSize: 512, physicalSectorSize: 512, readOnly: false, major: LOOP_MAJOR, minor });
          continue;
        }
        const loop = bind(s, minor, file, tag, directIo);
        return { number: minor, flags: loop.flags, device: openHandle(s, device, false, true) };
      }
      return fail(EBUSY, 'ioctl', device, 'LOOP_CONFIGURE');
    },
    async loopStatus(device): Promise<NativeLoopStatus> {
      const { loop, minor } = boundLoop(s, device, 'LOOP_GET_STATUS64');
      const dev = loop?.file.dev ?? FAKE_FILES_DEV;
      const backing = loop ? { backingMajor: dev.major, backingMinor: dev.minor, backingInode: loop.file.inode } : { backingMajor: 0, backingMinor: 0, backingInode: 0 };
      return { number: minor, flags: loop?.flags ?? 0, ...backing, offset: 0, sizeLimit: 0, fileName: loop?.tag ?? '' };
    },
    async loopSetCapacity(device) {
      const { loop } = boundLoop(s, device, 'LOOP_SET_CAPACITY');
      if (loop?.file.hostPath) loop.file.sizeBytes = Number(lstatSync(loop.file.hostPath).size);
      if (loop) s.system.blockDevices.get(device)!.sizeBytes = loopSize(loop.file);
    },
    async loopDetach(device) {
      const { loop } = boundLoop(s, device, 'LOOP_CLR_FD');
      // Held by anyone else: the kernel only marks it autoclear (detached at the last close).
      if (loop && openCount(s, loop.dev.key) > 0) loop.flags |= LO_FLAGS_AUTOCLEAR;
      else unbindLoop(s, device);
    },
  };
}
