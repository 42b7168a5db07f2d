import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { applyDelta } from '../../lib/snapshot/apply';
import { extentsOf } from '../../lib/snapshot/changes';
import { encodeDeltaEnd, encodeDeltaStart, encodeExtentHead, readDelta, type DeltaHeader } from '../../lib/snapshot/delta';
import { identityPath, readImageIdentity, writeImageIdentity, type ImageIdentity } from '../../lib/snapshot/image-identity';
import { formatTag, parseTag } from '../../lib/snapshot/tags';

const SIZE = 64 * 1024;
const header: DeltaHeader = {
  format: 'dmsnap-delta',
  version: 1,
  originId: '0123456789abcdef',
  originName: 'md2',
  sizeBytes: SIZE,
  chunkBytes: 4096,
  from: { snapId: 'aaaaaaaa', takenAt: '2026-12-01T00:00:00.000Z' },
  to: { snapId: 'bbbbbbbb', takenAt: '2026-12-02T00:00:00.000Z' },
};

/** A delta of `extents` (offset, data), as writeDelta lays it out. */
function delta(extents: [number, Buffer][], h: DeltaHeader = header): Buffer {
  const parts = [encodeDeltaStart(h)];
  for (const [offset, data] of extents) parts.push(encodeExtentHead(offset, data.length), data);
  const body = Buffer.concat(parts);
  return Buffer.concat([body, encodeDeltaEnd(extents.length, createHash('sha256').update(body).digest())]);
}

const stream = (bytes: Buffer, piece = 1000) => Readable.from((function* () { for (let i = 0; i < bytes.length; i += piece) yield bytes.subarray(i, i + piece); })());

describe('tracking tags', () => {
  it('carry the time a tracking snapshot was taken, and only for snapshots', () => {
    const uuid = formatTag({ originId: '0123456789abcdef', role: 'snap', snapId: 'deadbeef', trackingSince: 1764633600 });
    expect(uuid).toBe('DMSNAP-0123456789abcdef-snap-deadbeef-track-1764633600');
    expect(parseTag(uuid)).toEqual({ originId: '0123456789abcdef', role: 'snap', snapId: 'deadbeef', trackingSince: 1764633600 });
    expect(parseTag('DMSNAP-0123456789abcdef-snap-deadbeef')).toEqual({ originId: '0123456789abcdef', role: 'snap', snapId: 'deadbeef' });
    expect(parseTag('DMSNAP-0123456789abcdef-origin-track-1')).toBeUndefined();
    expect(parseTag('DMSNAP-0123456789abcdef-snap-deadbeef-track-')).toBeUndefined();
  });
});

describe('changed extents', () => {
  it('sorts the chunks, joins neighbours, drops duplicates and cuts at the origin end', () => {
    const exceptions = [5, 1, 2, 9, 2, 3].map((oldChunk, i) => ({ oldChunk, newChunk: i + 2 }));
    expect(extentsOf(exceptions, 4096, 9 * 4096 + 100)).toEqual([
      { offsetBytes: 4096, lengthBytes: 3 * 4096 },
      { offsetBytes: 5 * 4096, lengthBytes: 4096 },
      { offsetBytes: 9 * 4096, lengthBytes: 100 },
    ]);
    expect(extentsOf([{ oldChunk: 20, newChunk: 2 }], 4096, 4096)).toEqual([]);
  });
});

describe('the delta format', () => {
  it('reads back the header and every extent, in pieces of any size', async () => {
    const a = randomBytes(8192);
    const b = randomBytes(4096);
    const seen: [number, number][] = [];
    const result = await readDelta(stream(delta([[0, a], [16384, b]]), 777), async (h) => expect(h).toEqual(header), async (offset, data) => void seen.push([offset, data.length]), 3000);
    expect(result).toMatchObject({ extents: 2, bytes: 12288 });
    expect(seen).toEqual([[0, 3000], [3000, 3000], [6000, 2192], [16384, 3000], [19384, 1096]]);
  });

  it('refuses a delta cut short, with a changed byte, out of order, or with bytes after its end', async () => {
    const good = delta([[0, randomBytes(4096)], [8192, randomBytes(4096)]]);
    const read = (bytes: Buffer) => readDelta(stream(bytes), async () => undefined, async () => undefined);
    await expect(read(good.subarray(0, good.length - 10))).rejects.toMatchObject({ code: 'ERR_DMSNAP_IMAGE_MISMATCH' });
    const flipped = Buffer.from(good);
    flipped[flipped.length - 100] ^= 1;
    await expect(read(flipped)).rejects.toThrow(/checksum/);
    await expect(read(delta([[8192, randomBytes(10)], [0, randomBytes(10)]]))).rejects.toThrow(/out of order/);
    await expect(read(delta([[SIZE - 5, randomBytes(10)]]))).rejects.toThrow(/outside the origin/);
    await expect(read(Buffer.concat([good, Buffer.from('x')]))).rejects.toThrow(/follow its end/);
    await expect(read(Buffer.from('NOTADELTA...'))).rejects.toThrow(/DMSNAPD1/);
  });
});

describe('image identities and apply', () => {
  let dir: string;
  let image: string;
  const identity: ImageIdentity = {
    format: 'dmsnap-image',
    version: 1,
    originId: header.originId,
    originName: 'md2',
    sizeBytes: SIZE,
    chunkBytes: 4096,
    snapId: 'aaaaaaaa',
    takenAt: header.from.takenAt,
    state: 'complete',
  };
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'dmsnap-inc-'));
    image = join(dir, 'md2.img');
    writeFileSync(image, Buffer.alloc(SIZE, 1));
    writeImageIdentity(image, identity);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('writes the identity beside the image and reads it back', () => {
    expect(identityPath(image)).toBe(`${image}.dmsnap`);
    expect(readImageIdentity(image)).toEqual(identity);
    writeFileSync(identityPath(image), '{"format": "other"}');
    expect(() => readImageIdentity(image)).toThrow(/not an image identity/);
    expect(readImageIdentity(join(dir, 'none.img'))).toBeUndefined();
  });

  it('applies a delta and moves the identity to its end snapshot', async () => {
    const data = randomBytes(8192);
    await applyDelta(image, stream(delta([[4096, data]])));
    const content = readFileSync(image);
    expect(content.subarray(4096, 12288)).toEqual(data);
    expect(content.subarray(0, 4096)).toEqual(Buffer.alloc(4096, 1));
    expect(readImageIdentity(image)).toMatchObject({ snapId: 'bbbbbbbb', state: 'complete', takenAt: header.to.takenAt });
  });

  it('leaves an image marked incomplete after a broken delta, and completes it with the same delta', async () => {
    const good = delta([[0, randomBytes(4096)], [8192, randomBytes(4096)]]);
    await expect(applyDelta(image, stream(good.subarray(0, good.length - 40)))).rejects.toThrow(/not a complete dmsnap delta/);
    expect(readImageIdentity(image)).toMatchObject({ state: 'updating', snapId: 'aaaaaaaa', update: { toSnapId: 'bbbbbbbb' } });
    const other = { ...header, from: header.to, to: { snapId: 'cccccccc', takenAt: header.to.takenAt } };
    await expect(applyDelta(image, stream(delta([[0, randomBytes(10)]], other)))).rejects.toThrow(/interrupted/);
    await applyDelta(image, stream(good));
    expect(readImageIdentity(image)).toMatchObject({ state: 'complete', snapId: 'bbbbbbbb' });
  });

  it('refuses a delta of another origin, size or starting snapshot, and writes nothing', async () => {
    const before = readFileSync(image);
    const bytes = randomBytes(4096);
    await expect(applyDelta(image, stream(delta([[0, bytes]], { ...header, originId: 'ffffffffffffffff' })))).rejects.toThrow(/of origin md2 \(id ffffffffffffffff\)/);
    await expect(applyDelta(image, stream(delta([[0, bytes]], { ...header, sizeBytes: SIZE * 2 })))).rejects.toThrow(/bytes/);
    await expect(applyDelta(image, stream(delta([[0, bytes]], { ...header, from: { snapId: 'eeeeeeee', takenAt: '' } })))).rejects.toThrow(/apply the deltas in order/);
    expect(readFileSync(image)).toEqual(before);
    expect(readImageIdentity(image)).toEqual(identity);
    rmSync(identityPath(image));
    await expect(applyDelta(image, stream(delta([[0, bytes]])))).rejects.toThrow(/no dmsnap identity/);
  });
});
