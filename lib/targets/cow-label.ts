/**
 * dmsnap's label on a persistent COW: what a COW holds, for the snapshot to be found and
 * re-created after a reboot. The kernel's exception store cannot carry it (the kernel
 * zeroes its whole header chunk on every header write), so the label has the start of the
 * COW to itself and the store begins at a data offset after it:
 *
 *   bytes 0–4095      slot 0 ┐ the label, written alternately: a write torn by a power
 *   bytes 4096–8191   slot 1 ┘ cut spoils one slot, and the other still holds the last one
 *   data offset       the exception store: max(64 KiB, one chunk), so chunks stay aligned
 *
 * A slot: the 8 bytes "DMSNAPL1", a u32 (little-endian) length N, N bytes of JSON, the
 * SHA-256 of those N bytes; zeroes after. The label with the highest `seq` among the
 * slots that check wins. Pure: the caller reads and writes the 8 KiB (with O_DIRECT and a
 * flush, before the state the label describes). Labels are read from devices anyone may
 * have written: every field is checked, and a slot that fails any check is ignored.
 */
import { createHash } from 'node:crypto';
import { sectors, type Sectors } from '../units';
import type { FingerprintedFs } from './origin-fingerprint';
import { isChunkSize } from './snapshot';

const FINGERPRINTED: readonly FingerprintedFs[] = ['ext4', 'xfs', 'btrfs'];

export const LABEL_MAGIC = 'DMSNAPL1';
export const LABEL_SLOT_BYTES = 4096;
/** The two slots. */
export const LABEL_AREA_BYTES = 2 * LABEL_SLOT_BYTES;
/** The smallest data offset: 64 KiB. */
export const MIN_DATA_OFFSET_SECTORS = sectors(128);
const HEADER_BYTES = 12;
const DIGEST_BYTES = 32;
const MAX_JSON_BYTES = LABEL_SLOT_BYTES - HEADER_BYTES - DIGEST_BYTES;

/** What the snapshot on the COW is doing: taken and fed, kept for changed-block tracking, or being merged back. */
export type LabelState = 'active' | 'tracking' | 'merging';
const STATES: readonly LabelState[] = ['active', 'tracking', 'merging'];

/**
 * The origin as dmsnap left it when it detached it cleanly (see origin-fingerprint.ts):
 * the snapshot may be attached again only while the origin still shows this fingerprint.
 */
export interface LabelSeal {
  fs: FingerprintedFs;
  digest: string;
  sealedAt: string;
}

/** A label's content. */
export interface CowLabel {
  /** Raised by every write; the slot written is seq % 2. */
  seq: number;
  /** Where the exception store begins on the COW. */
  dataOffsetSectors: Sectors;
  origin: { id: string; name: string; sizeSectors: Sectors };
  snapshot: { id: string; name: string; chunkSectors: Sectors; createdAt: string; trackingSince: number | null };
  state: LabelState;
  /** Set when dmsnap detached the origin cleanly; null (or absent) while attached, or after a crash. */
  seal?: LabelSeal | null;
  /**
   * When `dmsnap rollback --at-boot` asked for this snapshot to be merged back at the next
   * attach (ISO 8601); null (or absent) otherwise.
   */
  rollbackAtBoot?: string | null;
  /** When this label was written, ISO 8601. */
  writtenAt: string;
}

/** Where the exception store begins for chunks of `chunkSectors`: 64 KiB, or one chunk if larger. */
export function dataOffsetSectors(chunkSectors: Sectors): Sectors {
  return sectors(Math.max(MIN_DATA_OFFSET_SECTORS, chunkSectors));
}

/** One slot's 4096 bytes for `label`. */
export function encodeLabelSlot(label: CowLabel): Buffer {
  const json = Buffer.from(JSON.stringify({ format: 'dmsnap-cow-label', version: 1, ...label }), 'utf8');
  if (json.length > MAX_JSON_BYTES) throw new RangeError(`a COW label holds at most ${MAX_JSON_BYTES} bytes of JSON; this one is ${json.length}`);
  const slot = Buffer.alloc(LABEL_SLOT_BYTES);
  slot.write(LABEL_MAGIC, 0, 'latin1');
  slot.writeUInt32LE(json.length, 8);
  json.copy(slot, HEADER_BYTES);
  createHash('sha256').update(json).digest().copy(slot, HEADER_BYTES + json.length);
  return slot;
}

/** The label in one slot, or why there is none. */
export function decodeLabelSlot(slot: Buffer): { label: CowLabel } | { problem: string } {
  if (slot.length < LABEL_SLOT_BYTES) return { problem: `a label slot is ${LABEL_SLOT_BYTES} bytes; got ${slot.length}` };
  if (slot.toString('latin1', 0, 8) !== LABEL_MAGIC) return { problem: 'no dmsnap label' };
  const length = slot.readUInt32LE(8);
  if (length > MAX_JSON_BYTES) return { problem: `its length ${length} is more than a slot holds` };
  const json = slot.subarray(HEADER_BYTES, HEADER_BYTES + length);
  const digest = slot.subarray(HEADER_BYTES + length, HEADER_BYTES + length + DIGEST_BYTES);
  if (!createHash('sha256').update(json).digest().equals(digest)) return { problem: 'its checksum does not match (a torn or damaged write)' };
  let parsed: unknown;
  try {
    parsed = JSON.parse(json.toString('utf8'));
  } catch {
    return { problem: 'its content is not JSON' };
  }
  const problem = labelProblem(parsed);
  return problem ? { problem } : { label: toLabel(parsed as CowLabel) };
}

/** The newest label in the 8 KiB area, and its slot; undefined when neither slot holds one. */
export function readLabel(area: Buffer): { label: CowLabel; slot: 0 | 1 } | undefined {
  if (area.length < LABEL_AREA_BYTES) throw new RangeError(`the label area is ${LABEL_AREA_BYTES} bytes; got ${area.length}`);
  let newest: { label: CowLabel; slot: 0 | 1 } | undefined;
  for (const slot of [0, 1] as const) {
    const decoded = decodeLabelSlot(area.subarray(slot * LABEL_SLOT_BYTES, (slot + 1) * LABEL_SLOT_BYTES));
    if ('label' in decoded && decoded.label.seq % 2 === slot && (!newest || decoded.label.seq > newest.label.seq)) newest = { label: decoded.label, slot };
  }
  return newest;
}

/** The next write of a label: `label` with the sequence raised past `current`'s, and where its slot lies (bytes from the COW's start). */
export function nextLabelWrite(current: CowLabel | undefined, label: Omit<CowLabel, 'seq'>): { label: CowLabel; offsetBytes: number; bytes: Buffer } {
  const next: CowLabel = { ...label, seq: current ? current.seq + 1 : 0 };
  return { label: next, offsetBytes: (next.seq % 2) * LABEL_SLOT_BYTES, bytes: encodeLabelSlot(next) };
}

const HEX16 = /^[0-9a-f]{16}$/;
const HEX8 = /^[0-9a-f]{8}$/;
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isName = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length < 128 && !/[/\0]/.test(v);
const isTime = (v: unknown): v is string => typeof v === 'string' && !Number.isNaN(Date.parse(v));

/** What is wrong with a decoded label's JSON, or undefined. */
function labelProblem(value: unknown): string | undefined {
  const v = value as Record<string, unknown> | null;
  if (typeof v !== 'object' || v === null) return 'its content is not an object';
  if (v.format !== 'dmsnap-cow-label' || v.version !== 1) return `format ${String(v.format)} version ${String(v.version)} is not one this dmsnap reads`;
  const origin = v.origin as Record<string, unknown> | null;
  const snap = v.snapshot as Record<string, unknown> | null;
  const checks: [boolean, string][] = [
    [isCount(v.seq), 'seq'],
    [isCount(v.dataOffsetSectors) && (v.dataOffsetSectors as number) >= MIN_DATA_OFFSET_SECTORS, 'dataOffsetSectors'],
    [typeof origin === 'object' && origin !== null, 'origin'],
    [typeof origin?.id === 'string' && HEX16.test(origin.id), 'origin.id'],
    [isName(origin?.name), 'origin.name'],
    [isCount(origin?.sizeSectors) && (origin!.sizeSectors as number) > 0, 'origin.sizeSectors'],
    [typeof snap === 'object' && snap !== null, 'snapshot'],
    [typeof snap?.id === 'string' && HEX8.test(snap.id), 'snapshot.id'],
    [isName(snap?.name), 'snapshot.name'],
    [isChunkSize(snap?.chunkSectors), 'snapshot.chunkSectors'],
    [isTime(snap?.createdAt), 'snapshot.createdAt'],
    [snap?.trackingSince === null || isCount(snap?.trackingSince), 'snapshot.trackingSince'],
    [STATES.includes(v.state as LabelState), 'state'],
    [v.seal === undefined || v.seal === null || isSeal(v.seal), 'seal'],
    [v.rollbackAtBoot === undefined || v.rollbackAtBoot === null || isTime(v.rollbackAtBoot), 'rollbackAtBoot'],
    [isTime(v.writtenAt), 'writtenAt'],
  ];
  const bad = checks.find(([ok]) => !ok);
  if (bad) return `its field ${bad[1]} is missing or wrong`;
  if ((v.dataOffsetSectors as number) < (snap!.chunkSectors as number)) return 'its data offset is smaller than one chunk';
  return undefined;
}

/** The checked JSON as a CowLabel, with only the known fields. */
function toLabel(v: CowLabel): CowLabel {
  return {
    seq: v.seq,
    dataOffsetSectors: sectors(v.dataOffsetSectors),
    origin: { id: v.origin.id, name: v.origin.name, sizeSectors: sectors(v.origin.sizeSectors) },
    snapshot: {
      id: v.snapshot.id,
      name: v.snapshot.name,
      chunkSectors: sectors(v.snapshot.chunkSectors),
      createdAt: v.snapshot.createdAt,
      trackingSince: v.snapshot.trackingSince,
    },
    state: v.state,
    seal: v.seal ? { fs: v.seal.fs, digest: v.seal.digest, sealedAt: v.seal.sealedAt } : null,
    rollbackAtBoot: v.rollbackAtBoot ?? null,
    writtenAt: v.writtenAt,
  };
}

function isSeal(value: unknown): value is LabelSeal {
  const seal = value as Record<string, unknown> | null;
  return typeof seal === 'object' && seal !== null && FINGERPRINTED.includes(seal.fs as FingerprintedFs) && typeof seal.digest === 'string' && /^[0-9a-f]{64}$/.test(seal.digest) && isTime(seal.sealedAt);
}
