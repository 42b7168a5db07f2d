/**
 * The persistent exception store's on-disk format, against stores built byte by byte as
 * dm-snap-persistent.c lays them out. The kernel's own stores are read in the VM suite.
 */
import { metadataAreaChunk, parseMetadataArea, parseStoreHeader, readExceptionTable, STORE_MAGIC } from '../../lib/targets/exception-store';

const CHUNK = 4096; // 8 sectors: 256 exceptions per area

/** A store of `n` exceptions (origin chunk 1000 + i), allocated as the kernel allocates (skipping metadata chunks). */
function buildStore(n: number, valid = 1): Map<number, Buffer> {
  const chunks = new Map<number, Buffer>();
  const header = Buffer.alloc(CHUNK);
  header.writeUInt32LE(STORE_MAGIC, 0);
  header.writeUInt32LE(valid, 4);
  header.writeUInt32LE(1, 8);
  header.writeUInt32LE(CHUNK / 512, 12);
  chunks.set(0, header);
  const perArea = CHUNK / 16;
  let nextFree = 2;
  for (let i = 0; i < n; i++) {
    const area = Math.floor(i / perArea);
    const at = metadataAreaChunk(area, CHUNK);
    const buf = chunks.get(at) ?? Buffer.alloc(CHUNK);
    buf.writeBigUInt64LE(BigInt(1000 + i), (i % perArea) * 16);
    buf.writeBigUInt64LE(BigInt(nextFree), (i % perArea) * 16 + 8);
    chunks.set(at, buf);
    nextFree++;
    if (nextFree % (perArea + 1) === 1) nextFree++;
  }
  return chunks;
}

const reader = (chunks: Map<number, Buffer>) => async (index: number) => chunks.get(index) ?? Buffer.alloc(CHUNK);

describe('the persistent exception store', () => {
  it('reads a header: new (zero magic), valid, invalid; refuses another magic', () => {
    expect(parseStoreHeader(Buffer.alloc(16))).toEqual({ kind: 'new' });
    expect(parseStoreHeader(buildStore(0).get(0)!)).toEqual({ kind: 'store', valid: true, version: 1, chunkSectors: 8 });
    expect(parseStoreHeader(buildStore(0, 0).get(0)!)).toMatchObject({ valid: false });
    expect(() => parseStoreHeader(Buffer.from('LUKS\xba\xbe\0\0\0\0\0\0\0\0\0\0', 'latin1'))).toThrow(/magic 0x/);
  });

  it.each([0, 1, 255, 256, 257, 600])('reads back all %i exceptions, across areas, with data chunks past each metadata chunk', async (n) => {
    const { exceptions } = await readExceptionTable(reader(buildStore(n)), CHUNK);
    expect(exceptions).toHaveLength(n);
    expect(exceptions.map((e) => e.oldChunk)).toEqual(Array.from({ length: n }, (_, i) => 1000 + i));
    // No data chunk is a metadata chunk (1, 258, 515, …).
    for (const e of exceptions) expect((e.newChunk - 1) % (CHUNK / 16 + 1)).not.toBe(0);
  });

  it('ends an area at the first zero new_chunk', () => {
    const area = Buffer.alloc(64);
    area.writeBigUInt64LE(7n, 0);
    area.writeBigUInt64LE(2n, 8);
    area.writeBigUInt64LE(9n, 32); // after the end: ignored
    area.writeBigUInt64LE(3n, 40);
    expect(parseMetadataArea(area)).toEqual({ exceptions: [{ oldChunk: 7, newChunk: 2 }], full: false });
  });

  it('refuses a store whose chunk size is not the one asked for', async () => {
    await expect(readExceptionTable(reader(buildStore(3)), 8192)).rejects.toThrow(/chunks are 8 sectors, not 16/);
  });
});
