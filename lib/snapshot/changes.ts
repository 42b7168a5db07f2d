/**
 * Changed-block tracking from a snapshot's own COW: the persistent exception store of a
 * snapshot taken at T1 lists every origin chunk written since T1 (an origin write waits
 * until its exception is committed), so the chunks it names are the origin's changes. The
 * table is read from the COW device past the page cache (the kernel writes it through
 * dm-io), while the snapshot lives.
 */
import { DmsnapError } from '../errors';
import { devicePathOf, devKey } from '../system/stack';
import { System } from '../system/system';
import { readExceptionTable, type StoreException } from '../targets/exception-store';
import { bytes, sectorsToBytes, type Bytes } from '../units';
import type { Snapshot } from './snapshot';

/** A run of changed origin bytes: whole chunks, in origin order. */
export interface ChangedExtent {
  offsetBytes: Bytes;
  lengthBytes: Bytes;
}

/** The exceptions of `snap`'s persistent COW, as the kernel committed them. */
export async function readSnapshotExceptions(snap: Snapshot): Promise<StoreException[]> {
  const { info } = snap;
  if (!info.persistent) {
    throw new DmsnapError(`snapshot ${snap.name} is transient (N): its exceptions are only in kernel memory; take it persistent (P) to track changes`, 'ERR_INVALID_ARG_VALUE');
  }
  const path = devicePathOf(info.cow);
  if (!path) throw new DmsnapError(`the COW device ${devKey(info.cow)} of snapshot ${snap.name} has no node in /dev`, 'ERR_DMSNAP_NOT_FOUND');
  const cow = await System.of(snap.dmClient).openBlockDevice(path, { exclusive: false, writable: false });
  try {
    if (devKey(cow.number) !== devKey(info.cow)) {
      throw new DmsnapError(`${path} is device ${devKey(cow.number)}, not the COW ${devKey(info.cow)} of snapshot ${snap.name}`, 'ERR_DMSNAP_NOT_FOUND');
    }
    const chunkBytes = sectorsToBytes(info.chunkSectors);
    const { sizeBytes } = await cow.info();
    const maxAreas = Math.floor(sizeBytes / chunkBytes);
    const { header, exceptions } = await readExceptionTable((index) => cow.read(index * chunkBytes, chunkBytes, { direct: true }), chunkBytes, maxAreas);
    if (header.kind === 'store' && !header.valid) {
      throw new DmsnapError(`snapshot ${snap.name} is invalid (its COW filled or failed): the changes since it was taken are lost; take a full image`, 'ERR_DMSNAP_SNAPSHOT_INVALID');
    }
    return exceptions;
  } finally {
    cow.close();
  }
}

/** The changed origin chunks as extents: sorted, adjacent chunks joined, cut at the origin's end. */
export function extentsOf(exceptions: readonly StoreException[], chunkBytes: number, originBytes: number): ChangedExtent[] {
  const chunks = [...new Set(exceptions.map((e) => e.oldChunk))].sort((a, b) => a - b);
  const extents: ChangedExtent[] = [];
  for (const chunk of chunks) {
    const offset = chunk * chunkBytes;
    if (offset >= originBytes) continue;
    const length = Math.min(chunkBytes, originBytes - offset);
    const last = extents[extents.length - 1];
    if (last && last.offsetBytes + last.lengthBytes === offset) last.lengthBytes = bytes(last.lengthBytes + length);
    else extents.push({ offsetBytes: bytes(offset), lengthBytes: bytes(length) });
  }
  return extents;
}

/** The origin's extents changed since `snap` was taken. */
export async function* changedExtents(snap: Snapshot, originBytes: number): AsyncGenerator<ChangedExtent> {
  const exceptions = await readSnapshotExceptions(snap);
  yield* extentsOf(exceptions, sectorsToBytes(snap.info.chunkSectors), originBytes);
}
