/**
 * Loop devices dmsnap attaches itself, with no losetup: a file on a free /dev/loopN
 * (LOOP_CONFIGURE with LO_FLAGS_AUTOCLEAR and a tag in lo_file_name), its status, its
 * capacity once the file grew, and its detach. An attached loop is held open until
 * released; with autoclear the kernel detaches it once nothing (no table, no open) holds it.
 */
import { appendHint } from '../explain';
import { SyscallError } from '../errors';
import { callNative, type NativeBinding, type NativeBlockDevice } from '../native';
import { bytes, type Bytes } from '../units';
import { check, checkPath, checkString } from '../validate';
import type { DevNumber } from '../dev-number';

/** lo_file_name is LO_NAME_SIZE (64) bytes, NUL included. */
export const LOOP_TAG_MAX_BYTES = 63;

const LOOP_DEVICE = /^\/dev\/loop(0|[1-9]\d{0,6})$/;
const TAG = /^[\x21-\x7e]+$/;

/** Options of Loops.attach. */
export interface LoopAttachOptions {
  /** Put in lo_file_name: printable ASCII without spaces, at most 63 bytes (e.g. 'DMSNAP-<id>-cow'). */
  tag: string;
  /** Ask for LO_FLAGS_DIRECT_IO (default true); the loop is attached without it where the kernel refuses it. */
  directIo?: boolean;
}

/** What LOOP_GET_STATUS64 and BLKGETSIZE64 say of a loop device. */
export interface LoopStatus {
  device: string;
  number: number;
  /** Its size now, in bytes. */
  sizeBytes: Bytes;
  autoclear: boolean;
  directIo: boolean;
  readOnly: boolean;
  /** The backing file: its filesystem's device number and its inode. */
  backing: DevNumber & { inode: number };
  offsetBytes: Bytes;
  /** 0: the whole file. */
  sizeLimitBytes: Bytes;
  /** lo_file_name. */
  tag: string;
}

/** A loop device dmsnap attached, held open until release(). */
export class AttachedLoop {
  /** '/dev/loopN'. */
  readonly device: string;
  readonly number: number;
  readonly major: number;
  readonly minor: number;
  /** Whether the kernel took LO_FLAGS_DIRECT_IO. */
  readonly directIo: boolean;

  constructor(number: number, directIo: boolean, private readonly held: NativeBlockDevice) {
    this.device = `/dev/loop${number}`;
    this.number = number;
    this.major = held.major;
    this.minor = held.minor;
    this.directIo = directIo;
  }

  /** Lets go of the open the attach kept: with autoclear, the loop goes once nothing else holds it. Again is a no-op. */
  release(): void {
    this.held.close();
  }
}

function checkDevice(device: unknown): asserts device is string {
  checkString(device, 'device');
  check(LOOP_DEVICE.test(device), 'device', 'a loop device path such as /dev/loop0', device);
}

function checkTag(tag: unknown): asserts tag is string {
  checkString(tag, 'tag');
  check(TAG.test(tag) && tag.length <= LOOP_TAG_MAX_BYTES, 'tag', `printable ASCII without spaces, 1 to ${LOOP_TAG_MAX_BYTES} bytes (lo_file_name)`, tag);
}

/** Advice for a failed attach, by what failed. */
function attachHint(error: SyscallError, file: string): string | undefined {
  if (error.path === '/dev/loop-control' && error.code === 'ENOENT') return 'the loop driver is not loaded: run "modprobe loop" as root';
  if (error.path !== file) return undefined;
  if (error.code === 'ELOOP') return `${file} is a symbolic link: name the file itself`;
  if (error.code === 'EISDIR') return `${file} is a directory: name a regular file`;
  return undefined;
}

async function withHint<T>(call: () => Promise<T>, hint: (error: SyscallError) => string | undefined): Promise<T> {
  try {
    return await callNative(call);
  } catch (error) {
    const text = error instanceof SyscallError ? hint(error) : undefined;
    if (text) appendHint(error as Error, text);
    throw error;
  }
}

const notAttached = (device: string) => (error: SyscallError) => (error.code === 'ENXIO' ? `nothing is attached to ${device}` : undefined);

/** The loop-device calls of one native binding (System.loop). */
export class Loops {
  constructor(private readonly binding: NativeBinding) {}

  private flag(name: string): number {
    return this.binding.loopConstants[name]!;
  }

  /** Attaches the regular file `path` (never through a symlink as its last component) to a free loop device. */
  async attach(path: string, options: LoopAttachOptions): Promise<AttachedLoop> {
    checkPath(path, 'path');
    checkTag(options.tag);
    const directIo = options.directIo ?? true;
    check(typeof directIo === 'boolean', 'directIo', 'a boolean', directIo);
    const attached = await withHint(() => this.binding.loopAttach(path, options.tag, directIo), (error) => attachHint(error, path));
    return new AttachedLoop(attached.number, (attached.flags & this.flag('LO_FLAGS_DIRECT_IO')) !== 0, attached.device);
  }

  /** LOOP_GET_STATUS64 and the size of `device`. */
  async status(device: string): Promise<LoopStatus> {
    checkDevice(device);
    const native = await withHint(() => this.binding.loopStatus(device), notAttached(device));
    const size = await callNative(() => this.binding.queryBlockDevice(device));
    return {
      device,
      number: native.number,
      sizeBytes: bytes(size.sizeBytes),
      autoclear: (native.flags & this.flag('LO_FLAGS_AUTOCLEAR')) !== 0,
      directIo: (native.flags & this.flag('LO_FLAGS_DIRECT_IO')) !== 0,
      readOnly: (native.flags & this.flag('LO_FLAGS_READ_ONLY')) !== 0,
      backing: { major: native.backingMajor, minor: native.backingMinor, inode: native.backingInode },
      offsetBytes: bytes(native.offset),
      sizeLimitBytes: bytes(native.sizeLimit),
      tag: native.fileName,
    };
  }

  /** LOOP_SET_CAPACITY after the backing file grew; resolves the device's new size. */
  async grow(device: string): Promise<Bytes> {
    checkDevice(device);
    await withHint(() => this.binding.loopSetCapacity(device), notAttached(device));
    return bytes((await callNative(() => this.binding.queryBlockDevice(device))).sizeBytes);
  }

  /** LOOP_CLR_FD: detached now if nothing else holds it open, else at the last close. */
  async detach(device: string): Promise<void> {
    checkDevice(device);
    return withHint(() => this.binding.loopDetach(device), notAttached(device));
  }
}
