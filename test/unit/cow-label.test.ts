/**
 * The COW label's format (lib/targets/cow-label.ts): what a write puts in which slot, the
 * newest good slot winning over a torn or damaged one, and labels from a hostile device
 * (bad magic, lengths, checksums, JSON, fields) ignored without an exception.
 */
import { createHash } from 'node:crypto';
import * as fc from 'fast-check';
import {
  LABEL_AREA_BYTES,
  LABEL_SLOT_BYTES,
  dataOffsetSectors,
  decodeLabelSlot,
  encodeLabelSlot,
  nextLabelWrite,
  readLabel,
  type CowLabel,
} from '../../lib/targets/cow-label';
import { sectors } from '../../lib/units';

const base: Omit<CowLabel, 'seq'> = {
  dataOffsetSectors: sectors(128),
  origin: { id: '0123456789abcdef', name: 'md2', sizeSectors: sectors(2097152) },
  snapshot: { id: '89abcdef', name: 'md2-snap', chunkSectors: sectors(32), createdAt: '2026-12-04T16:00:00.000Z', trackingSince: null },
  state: 'active',
  seal: null,
  rollbackAtBoot: null,
  writtenAt: '2026-12-04T16:00:01.000Z',
};

/** The 8 KiB area after writing each label in turn, as the lifecycle will. */
function written(...labels: Omit<CowLabel, 'seq'>[]): { area: Buffer; last: CowLabel } {
  const area = Buffer.alloc(LABEL_AREA_BYTES);
  let last: CowLabel | undefined;
  for (const label of labels) {
    const write = nextLabelWrite(last, label);
    write.bytes.copy(area, write.offsetBytes);
    last = write.label;
  }
  return { area, last: last! };
}

/** A slot with this JSON and a correct checksum: what a hostile device could hold. */
function slotWithJson(json: string): Buffer {
  const body = Buffer.from(json);
  const slot = Buffer.alloc(LABEL_SLOT_BYTES);
  slot.write('DMSNAPL1', 0, 'latin1');
  slot.writeUInt32LE(body.length, 8);
  body.copy(slot, 12);
  createHash('sha256').update(body).digest().copy(slot, 12 + body.length);
  return slot;
}

describe('the COW label', () => {
  it('places its store past 64 KiB, or past one chunk when chunks are larger', () => {
    expect(dataOffsetSectors(sectors(8))).toBe(128);
    expect(dataOffsetSectors(sectors(128))).toBe(128);
    expect(dataOffsetSectors(sectors(1024))).toBe(1024);
  });

  it('reads back what was written, newest first, writing the two slots in turn', () => {
    const first = nextLabelWrite(undefined, base);
    expect(first).toMatchObject({ label: { seq: 0 }, offsetBytes: 0 });
    expect(nextLabelWrite(first.label, base)).toMatchObject({ label: { seq: 1 }, offsetBytes: LABEL_SLOT_BYTES });
    const { area, last } = written(base, { ...base, state: 'tracking', snapshot: { ...base.snapshot, trackingSince: 1796400000 } }, { ...base, state: 'merging' });
    expect(readLabel(area)).toEqual({ label: last, slot: 0 });
    expect(last).toMatchObject({ seq: 2, state: 'merging' });
    expect(readLabel(Buffer.alloc(LABEL_AREA_BYTES))).toBeUndefined();
  });

  it('falls back to the other slot when the newest was torn by a power cut', () => {
    const { area } = written(base, { ...base, state: 'merging' });
    // The write of seq 1 (slot 1) stopped half-way: its second half is still zeroes.
    area.fill(0, LABEL_SLOT_BYTES + 64, LABEL_AREA_BYTES);
    expect(readLabel(area)).toMatchObject({ label: { seq: 0, state: 'active' }, slot: 0 });
    expect(decodeLabelSlot(area.subarray(LABEL_SLOT_BYTES))).toEqual({ problem: 'its checksum does not match (a torn or damaged write)' });
  });

  it('ignores a label in the wrong slot for its sequence (a copy, not a write dmsnap made)', () => {
    const area = Buffer.alloc(LABEL_AREA_BYTES);
    encodeLabelSlot({ ...base, seq: 0 }).copy(area, LABEL_SLOT_BYTES);
    expect(readLabel(area)).toBeUndefined();
  });

  it.each([
    ['no magic', Buffer.alloc(LABEL_SLOT_BYTES), 'no dmsnap label'],
    ['a length past the slot', (() => { const b = encodeLabelSlot({ ...base, seq: 0 }); b.writeUInt32LE(5000, 8); return b; })(), 'its length 5000 is more than a slot holds'],
    ['not JSON', slotWithJson('{"format":'), 'its content is not JSON'],
    ['not an object', slotWithJson('42'), 'its content is not an object'],
    ['another format', slotWithJson('{"format":"dmsnap-cow-label","version":2}'), 'format dmsnap-cow-label version 2 is not one this dmsnap reads'],
  ])('ignores a slot with %s', (_what, slot, problem) => {
    expect(decodeLabelSlot(slot)).toEqual({ problem });
  });

  it.each([
    ['seq', { seq: -1 }],
    ['dataOffsetSectors', { dataOffsetSectors: 8 }],
    ['origin.id', { origin: { ...base.origin, id: '../../etc' } }],
    ['origin.name', { origin: { ...base.origin, name: 'a/b' } }],
    ['origin.sizeSectors', { origin: { ...base.origin, sizeSectors: 0 } }],
    ['snapshot.id', { snapshot: { ...base.snapshot, id: 'XYZ' } }],
    ['snapshot.chunkSectors', { snapshot: { ...base.snapshot, chunkSectors: 12 } }],
    ['snapshot.createdAt', { snapshot: { ...base.snapshot, createdAt: 'yesterday' } }],
    ['snapshot.trackingSince', { snapshot: { ...base.snapshot, trackingSince: '1' } }],
    ['state', { state: 'deleted' }],
    ['seal', { seal: { fs: 'zfs', digest: 'a'.repeat(64), sealedAt: '2026-12-04T16:00:02.000Z' } }],
    ['seal', { seal: { fs: 'ext4', digest: 'short', sealedAt: '2026-12-04T16:00:02.000Z' } }],
    ['rollbackAtBoot', { rollbackAtBoot: 'at the next boot' }],
    ['rollbackAtBoot', { rollbackAtBoot: true }],
    ['writtenAt', { writtenAt: null }],
  ])('ignores a label whose %s is wrong', (field, change) => {
    const json = JSON.stringify({ format: 'dmsnap-cow-label', version: 1, ...base, seq: 0, ...change });
    expect(decodeLabelSlot(slotWithJson(json))).toEqual({ problem: `its field ${field} is missing or wrong` });
  });

  it('reads a seal back, and a label without one as unsealed', () => {
    const seal = { fs: 'xfs' as const, digest: 'ab'.repeat(32), sealedAt: '2026-12-04T16:00:02.000Z' };
    const sealed = nextLabelWrite(undefined, { ...base, seal });
    expect(decodeLabelSlot(sealed.bytes)).toEqual({ label: { ...base, seal, seq: 0 } });
    const { seal: _, rollbackAtBoot: __, ...unsealed } = base;
    const json = JSON.stringify({ format: 'dmsnap-cow-label', version: 1, ...unsealed, seq: 0 });
    expect(decodeLabelSlot(slotWithJson(json))).toEqual({ label: { ...base, seq: 0 } });
  });

  it('reads back a rollback recorded for the next boot', () => {
    const recorded = nextLabelWrite(undefined, { ...base, rollbackAtBoot: '2026-12-04T16:00:03.000Z' });
    expect(decodeLabelSlot(recorded.bytes)).toEqual({ label: { ...base, rollbackAtBoot: '2026-12-04T16:00:03.000Z', seq: 0 } });
  });

  it('ignores a label whose store would begin inside its first chunk', () => {
    const json = JSON.stringify({ format: 'dmsnap-cow-label', version: 1, ...base, seq: 0, snapshot: { ...base.snapshot, chunkSectors: 1024 } });
    expect(decodeLabelSlot(slotWithJson(json))).toEqual({ problem: 'its data offset is smaller than one chunk' });
  });

  it('keeps only the fields it knows', () => {
    const json = JSON.stringify({ format: 'dmsnap-cow-label', version: 1, ...base, seq: 0, extra: 'x'.repeat(100) });
    const decoded = decodeLabelSlot(slotWithJson(json));
    expect(decoded).toEqual({ label: { ...base, seq: 0 } });
  });

  it('never throws on damaged bytes: a label is either read whole or not at all', () => {
    const { area } = written(base, { ...base, state: 'merging' });
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(LABEL_AREA_BYTES - 1), fc.nat(255)), { minLength: 1, maxLength: 8 }), (edits) => {
        const damaged = Buffer.from(area);
        for (const [at, value] of edits) damaged[at] = value;
        const read = readLabel(damaged);
        if (read) expect([0, 1]).toContain(read.label.seq);
      }),
    );
  });
});
