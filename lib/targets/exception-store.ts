/**
 * The on-disk format of the persistent exception store (a `P` snapshot's COW), as
 * drivers/md/dm-snap-persistent.c writes it, all little-endian:
 *
 *   chunk 0                 the header: magic 0x70416e53 ("SnAp"), valid, version 1,
 *                           chunk size in sectors
 *   chunk 1 + (E + 1) · i   metadata area i: E = chunk bytes / 16 exceptions, each
 *                           { le64 old_chunk, le64 new_chunk }; the E chunks after it hold
 *                           the data those exceptions copied
 *
 * The table ends at the first exception whose new_chunk is 0 (the kernel zeroes the next
 * area before it fills the current one). Pure: the caller reads the chunks (with O_DIRECT:
 * the kernel writes them through dm-io, not the page cache).
 */
import { EXCEPTION_BYTES } from './snapshot';

/** "SnAp" read as a little-endian 32-bit number. */
export const STORE_MAGIC = 0x70416e53;
/** The only on-disk version the kernel writes. */
export const STORE_VERSION = 1;

/** The header chunk of a persistent exception store. */
export type StoreHeader =
  | { kind: 'new' }
  | { kind: 'store'; valid: boolean; version: number; chunkSectors: number };

/** One exception: origin chunk `oldChunk` was copied to COW chunk `newChunk`. */
export interface StoreException {
  oldChunk: number;
  newChunk: number;
}

/** Chunk index of metadata area `area` for chunks of `chunkBytes`. */
export function metadataAreaChunk(area: number, chunkBytes: number): number {
  return 1 + (chunkBytes / EXCEPTION_BYTES + 1) * area;
}

/** Reads the header chunk (its first 16 bytes). A zero magic is a store never written ('new'). */
export function parseStoreHeader(chunk: Buffer): StoreHeader {
  if (chunk.length < 16) throw new RangeError(`an exception store header is 16 bytes; got ${chunk.length}`);
  const magic = chunk.readUInt32LE(0);
  if (magic === 0) return { kind: 'new' };
  if (magic !== STORE_MAGIC) throw new RangeError(`not a persistent exception store: magic 0x${magic.toString(16).padStart(8, '0')}, not 0x${STORE_MAGIC.toString(16)}`);
  return { kind: 'store', valid: chunk.readUInt32LE(4) !== 0, version: chunk.readUInt32LE(8), chunkSectors: chunk.readUInt32LE(12) };
}

/** The exceptions of one metadata area, and whether the table goes on in the next area. */
export function parseMetadataArea(area: Buffer): { exceptions: StoreException[]; full: boolean } {
  const exceptions: StoreException[] = [];
  const count = Math.floor(area.length / EXCEPTION_BYTES);
  for (let i = 0; i < count; i++) {
    const newChunk = area.readBigUInt64LE(i * EXCEPTION_BYTES + 8);
    if (newChunk === 0n) return { exceptions, full: false };
    const oldChunk = area.readBigUInt64LE(i * EXCEPTION_BYTES);
    if (oldChunk > BigInt(Number.MAX_SAFE_INTEGER) || newChunk > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new RangeError(`exception ${i} names chunk ${oldChunk} → ${newChunk}, beyond what dmsnap can address`);
    }
    exceptions.push({ oldChunk: Number(oldChunk), newChunk: Number(newChunk) });
  }
  return { exceptions, full: true };
}

/**
 * The whole exception table of a store, reading chunk `i` with `readChunk(i)`; stops at
 * the table's end or after `maxAreas` areas (a store larger than its device is corrupt).
 */
export async function readExceptionTable(
  readChunk: (index: number) => Promise<Buffer>,
  chunkBytes: number,
  maxAreas = Number.MAX_SAFE_INTEGER,
): Promise<{ header: StoreHeader; exceptions: StoreException[] }> {
  const header = parseStoreHeader(await readChunk(0));
  if (header.kind === 'new') return { header, exceptions: [] };
  if (header.chunkSectors * 512 !== chunkBytes) {
    throw new RangeError(`the store's chunks are ${header.chunkSectors} sectors, not ${chunkBytes / 512}`);
  }
  const exceptions: StoreException[] = [];
  for (let area = 0; area < maxAreas; area++) {
    const parsed = parseMetadataArea(await readChunk(metadataAreaChunk(area, chunkBytes)));
    exceptions.push(...parsed.exceptions);
    if (!parsed.full) break;
  }
  return { header, exceptions };
}
