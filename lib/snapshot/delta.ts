/**
 * dmsnap's delta format: the chunks of an origin that changed between two tracking
 * snapshots, as one stream (for a file, a pipe into restic/borg/kopia, or `dmsnap apply`).
 * All integers little-endian:
 *
 *   "DMSNAPD1"                      8 bytes, the magic
 *   u32 n, then n bytes of JSON     the header: {"format": "dmsnap-delta", "version": 1,
 *                                   "originId", "originName", "sizeBytes", "chunkBytes",
 *                                   "from": {"snapId", "takenAt"}, "to": {"snapId", "takenAt"}}
 *   { u64 offset, u64 length, data } each extent: `length` bytes of the origin at `offset`
 *                                   as they were at "to", in increasing offsets
 *   u64 2^64-1, u64 count, 32 bytes the end: the number of extents, and the SHA-256 of
 *                                   every byte before this end record
 *
 * Applied to an image holding the origin at "from", it gives the origin at "to".
 */
import { createHash, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { DmsnapError } from '../errors';

export const DELTA_MAGIC = Buffer.from('DMSNAPD1', 'latin1');
const END = 0xffffffffffffffffn;
/** The largest header dmsnap reads (it writes a few hundred bytes). */
const MAX_HEADER_BYTES = 64 * 1024;

/** The header of a delta. */
export interface DeltaHeader {
  format: 'dmsnap-delta';
  version: 1;
  originId: string;
  originName: string;
  sizeBytes: number;
  chunkBytes: number;
  from: { snapId: string; takenAt: string };
  to: { snapId: string; takenAt: string };
}

/** The bytes that start a delta: magic, header length, header. */
export function encodeDeltaStart(header: DeltaHeader): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32LE(json.length);
  return Buffer.concat([DELTA_MAGIC, length, json]);
}

/** The 16 bytes before an extent's data. */
export function encodeExtentHead(offset: number, length: number): Buffer {
  const head = Buffer.alloc(16);
  head.writeBigUInt64LE(BigInt(offset), 0);
  head.writeBigUInt64LE(BigInt(length), 8);
  return head;
}

/** The end record, given the extent count and the hash of everything before it. */
export function encodeDeltaEnd(count: number, digest: Buffer): Buffer {
  const end = Buffer.alloc(16);
  end.writeBigUInt64LE(END, 0);
  end.writeBigUInt64LE(BigInt(count), 8);
  return Buffer.concat([end, digest]);
}

function corrupt(why: string): DmsnapError {
  return new DmsnapError(`not a complete dmsnap delta: ${why}`, 'ERR_DMSNAP_IMAGE_MISMATCH');
}

/** Pulls exact byte counts from a stream, hashing what it hands out. */
class Pull {
  private pending: Buffer[] = [];
  private held = 0;
  private ended = false;
  private readonly iterator: AsyncIterator<Buffer>;
  readonly hash: Hash = createHash('sha256');

  constructor(stream: Readable) {
    this.iterator = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  /** Exactly `n` bytes (fewer only at the stream's end). */
  async take(n: number, hashed = true): Promise<Buffer> {
    while (this.held < n && !this.ended) {
      const next = await this.iterator.next();
      if (next.done) this.ended = true;
      else {
        const chunk = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
        this.pending.push(chunk);
        this.held += chunk.length;
      }
    }
    const all = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending);
    const out = all.subarray(0, Math.min(n, all.length));
    const rest = all.subarray(out.length);
    this.pending = rest.length > 0 ? [rest] : [];
    this.held = rest.length;
    if (hashed) this.hash.update(out);
    return out;
  }

  async exactly(n: number, what: string, hashed = true): Promise<Buffer> {
    const out = await this.take(n, hashed);
    if (out.length !== n) throw corrupt(`it ends inside ${what}`);
    return out;
  }

  async atEnd(): Promise<boolean> {
    return (await this.take(1, false)).length === 0;
  }
}

/** Reads a delta: its header, then each extent's data in pieces, then checks its end. */
export async function readDelta(
  stream: Readable,
  onHeader: (header: DeltaHeader) => Promise<void>,
  onData: (offset: number, data: Buffer) => Promise<void>,
  pieceBytes = 4 * 1024 * 1024,
): Promise<{ header: DeltaHeader; extents: number; bytes: number }> {
  const pull = new Pull(stream);
  if (!(await pull.exactly(8, 'the magic')).equals(DELTA_MAGIC)) throw corrupt('it does not start with DMSNAPD1');
  const headerBytes = (await pull.exactly(4, 'the header length')).readUInt32LE(0);
  if (headerBytes > MAX_HEADER_BYTES) throw corrupt(`its header claims ${headerBytes} bytes`);
  let header: DeltaHeader;
  try {
    header = JSON.parse((await pull.exactly(headerBytes, 'the header')).toString('utf8')) as DeltaHeader;
  } catch (error) {
    if (error instanceof DmsnapError) throw error;
    throw corrupt('its header is not JSON');
  }
  if (header.format !== 'dmsnap-delta' || header.version !== 1 || !Number.isSafeInteger(header.sizeBytes)) throw corrupt('its header is not a version 1 delta header');
  await onHeader(header);
  let extents = 0;
  let bytes = 0;
  let last = 0;
  for (;;) {
    // The end record is not part of the hash: hashed only once it is known to be an extent's.
    const head = await pull.exactly(16, 'an extent header', false);
    const offset = head.readBigUInt64LE(0);
    const length = head.readBigUInt64LE(8);
    if (offset === END) {
      const digest = pull.hash.digest();
      const expected = await pull.exactly(32, 'the checksum', false);
      if (Number(length) !== extents) throw corrupt(`it ends after ${extents} extents but says ${length}`);
      if (!expected.equals(digest)) throw corrupt('its checksum does not match its content');
      if (!(await pull.atEnd())) throw corrupt('bytes follow its end record');
      return { header, extents, bytes };
    }
    pull.hash.update(head);
    const start = Number(offset);
    const size = Number(length);
    if (start < last || start + size > header.sizeBytes || size === 0) throw corrupt(`extent ${extents} (${start}+${size}) is out of order or outside the origin`);
    for (let done = 0; done < size; ) {
      const piece = await pull.exactly(Math.min(pieceBytes, size - done), `extent ${extents}`);
      await onData(start + done, piece);
      done += piece.length;
    }
    last = start + size;
    extents++;
    bytes += size;
  }
}
