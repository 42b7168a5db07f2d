/**
 * The addon's block-device calls on the fake kernel: opening a path (ENOENT, ENOTBLK,
 * EACCES, EBUSY as the kernel answers), the sizes of a device, what libblkid finds on
 * it, its first bytes, zeroing its start, and mknod.
 */
import { makeSyscallError, type NativeBinding, type NativeBlockDevice, type NativeBlockDeviceInfo, type NativeSignature } from '../../../lib/native';
import { DM_MAJOR, EACCES, EBUSY, EEXIST, EINVAL, ENOENT, ENOTBLK, ENXIO, EPERM } from './constants';
import type { DevNumber, FakeState } from './model';
import { addOpen, heldExclusively } from './opens';
import { loopByNumber, lookupDevicePath, lookupPath, mdByMinor, openable, storageKey } from './paths';

export function failOpen(errno: number, syscall: string, path: string): never {
  throw makeSyscallError({ errno, syscall, path });
}

/** open(2) of a path as the addon does it for a block device. */
function openedPath(s: FakeState, path: string): DevNumber {
  const found = lookupPath(s, path);
  if (!found) return failOpen(ENOENT, 'open', path);
  if (found === 'other') return failOpen(ENOTBLK, 'open', path);
  if (s.system.unprivileged) return failOpen(EACCES, 'open', path);
  return found;
}

/** BLKGETSIZE64 and friends of a device number (ENXIO for a dm device without a disk). */
function infoOf(s: FakeState, found: DevNumber, path: string): NativeBlockDeviceInfo {
  const loop = loopByNumber(s, found.major, found.minor);
  if (loop) return { ...loop };
  const md = found.major === DM_MAJOR ? mdByMinor(s, found.minor) : undefined;
  if (!md || !md.hasDisk) return failOpen(ENXIO, 'open', path);
  const size = md.live?.size ?? 0;
  return { sizeBytes: size * 512, logicalSectorSize: 512, physicalSectorSize: 512, readOnly: md.diskReadOnly, major: DM_MAJOR, minor: md.minor };
}

/** The paths with recorded signatures that name the device `key`. */
function signaturePathsOf(s: FakeState, key: string): string[] {
  return [...s.system.signatures.keys()].filter((p) => (lookupDevicePath(s, p) as DevNumber | undefined)?.key === key);
}

/** What libblkid finds on a device: the signatures of every path naming it, and a COW header. */
function signaturesOf(s: FakeState, found: DevNumber | 'other' | undefined, path: string): NativeSignature[] {
  const paths = found && found !== 'other' ? signaturePathsOf(s, found.key) : [];
  const known = [...new Set([path, ...paths])].flatMap((p) => s.system.signatures.get(p) ?? []);
  const signatures = known.map((signature) => ({ ...signature }));
  // libblkid knows the header a persistent snapshot leaves at the start of its COW.
  const hasHeader = found && found !== 'other' && openable(s, found) && s.cowMetadata.has(storageKey(s, found));
  if (hasHeader && !signatures.some((signature) => signature.type === 'DM_snapshot_cow')) {
    signatures.push({ type: 'DM_snapshot_cow', usage: 'other', label: '', uuid: '', offset: 0 });
  }
  return signatures;
}

/** The first bytes of a device: the persistent snapshot header, if one is there. */
function bytesOf(s: FakeState, found: DevNumber, offset: number, length: number): Buffer {
  const bytes = Buffer.alloc(length);
  // The persistent snapshot header: magic "SnAp", valid, version 1, chunk size.
  const store = openable(s, found) && offset % 512 === 0 ? s.cowMetadata.get(storageKey(s, found, offset / 512)) : undefined;
  if (store?.persistent && length >= 16) {
    bytes.writeUInt32LE(0x70416e53, 0);
    bytes.writeUInt32LE(store.valid ? 1 : 0, 4);
    bytes.writeUInt32LE(1, 8);
    bytes.writeUInt32LE(store.chunkSize, 12);
  }
  if (!openable(s, found)) return bytes;
  for (let at = offset - (offset % 512); at < offset + length; at += 512) {
    const data = s.sectorData.get(storageKey(s, found, at / 512));
    if (!data) continue;
    const from = Math.max(at, offset);
    data.copy(bytes, from - offset, from - at, Math.min(512, offset + length - at));
  }
  return bytes;
}

/** writeAt: whole 512-byte sectors, kept by where they land on the underlying device. */
function writeAt(s: FakeState, found: DevNumber, path: string, offset: number, data: Buffer): void {
  if (offset % 512 !== 0 || data.length % 512 !== 0) failOpen(EINVAL, 'pwrite', path);
  for (let at = 0; at < data.length; at += 512) {
    s.sectorData.set(storageKey(s, found, (offset + at) / 512), Buffer.from(data.subarray(at, at + 512)));
  }
}

/** Zeroing the start of a device: its snapshot header and the signatures in that range go. */
function zeroStart(s: FakeState, found: DevNumber, path: string, lengthBytes: number): void {
  for (let sector = 0; sector * 512 < lengthBytes; sector++) {
    const key = storageKey(s, found, sector);
    s.cowMetadata.delete(key);
    s.sectorData.delete(key);
  }
  s.system.zeroed.set(path, lengthBytes);
  for (const p of signaturePathsOf(s, found.key)) {
    const left = (s.system.signatures.get(p) ?? []).filter((signature) => signature.offset >= lengthBytes);
    if (left.length > 0) s.system.signatures.set(p, left);
    else s.system.signatures.delete(p);
  }
}

/** The addon's BlockDevice: one device, fixed at open, whatever becomes of the path. */
export function openHandle(s: FakeState, path: string, exclusive: boolean, writable: boolean): NativeBlockDevice {
  if (exclusive && s.spawning > 0) s.system.exclusiveOpensDuringSpawn++;
  const found = openedPath(s, path);
  if (exclusive && heldExclusively(s, found.key)) failOpen(EBUSY, 'open', path);
  const close = addOpen(s, found.key, exclusive);
  let closed = false;
  const live = () => {
    if (closed) throw new Error(`the block device ${path} is closed`);
  };
  return {
    path,
    major: found.major,
    minor: found.minor,
    get closed() {
      return closed;
    },
    query: async () => (live(), infoOf(s, found, path)),
    probeSignatures: async () => (live(), signaturesOf(s, found, path)),
    read: async (offset: number, length: number, direct?: boolean) => {
      live();
      // O_DIRECT wants whole logical blocks.
      if (direct && (offset % 512 !== 0 || length % 512 !== 0)) failOpen(EINVAL, 'pread', path);
      return bytesOf(s, found, offset, length);
    },
    async zeroStart(lengthBytes: number) {
      live();
      if (!writable) throw new Error(`the block device ${path} was opened read-only`);
      zeroStart(s, found, path, lengthBytes);
    },
    async writeAt(offset: number, data: Buffer) {
      live();
      if (!writable) throw new Error(`the block device ${path} was opened read-only`);
      writeAt(s, found, path, offset, data);
    },
    close() {
      closed = true;
      close();
    },
  };
}

type BlockDeviceCalls = Pick<
  NativeBinding,
  'queryBlockDevice' | 'statBlockDevice' | 'readDeviceBytes' | 'probeSignatures' | 'openBlockDevice' | 'makeBlockNode' | 'checkExclusive'
>;

/** The binding's block-device functions. */
export function blockDeviceCalls(s: FakeState): BlockDeviceCalls {
  return {
    queryBlockDevice: async (path) => infoOf(s, openedPath(s, path), path),
    async statBlockDevice(path) {
      const found = lookupPath(s, path);
      if (!found) return failOpen(ENOENT, 'stat', path);
      if (found === 'other') return failOpen(ENOTBLK, 'stat', path);
      return { major: found.major, minor: found.minor };
    },
    async readDeviceBytes(path, offset, length) {
      const found = lookupDevicePath(s, path);
      if (!found) return failOpen(ENOENT, 'open', path);
      if (found === 'other') return failOpen(ENOTBLK, 'open', path);
      return bytesOf(s, found, offset, length);
    },
    async probeSignatures(path) {
      const known = s.system.signatures.get(path);
      const found = lookupDevicePath(s, path);
      if (!found && !known) return failOpen(ENOENT, 'open', path);
      if (found === 'other' && !known) return failOpen(ENOTBLK, 'open', path);
      if (s.system.unprivileged) return failOpen(EACCES, 'open', path);
      return signaturesOf(s, found, path);
    },
    openBlockDevice: async (path, exclusive, writable) => openHandle(s, path, exclusive, writable),
    async makeBlockNode(path, major, minor, mode) {
      if (s.system.unprivileged) failOpen(EPERM, 'mknod', path);
      if (lookupPath(s, path)) failOpen(EEXIST, 'mknod', path);
      s.system.nodes.set(path, { major, minor, mode });
    },
    async checkExclusive(path) {
      if (s.spawning > 0) s.system.exclusiveOpensDuringSpawn++;
      const found = openedPath(s, path);
      if (heldExclusively(s, found.key)) failOpen(EBUSY, 'open', path);
    },
  };
}
