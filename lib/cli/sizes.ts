/**
 * Sizes on the command line: a plain number counts 512-byte sectors (as dmsetup and
 * lvcreate's chunk sizes do); a unit makes it bytes, in powers of 1024 as LVM reads them.
 */
import { isChunkSize, MAX_CHUNK_SECTORS, MIN_CHUNK_SECTORS } from '../targets/snapshot';
import { SECTOR_BYTES } from '../units';
import { UsageError } from './command';

const UNITS: Record<string, number> = {
  s: SECTOR_BYTES,
  b: 1,
  k: 1024,
  kib: 1024,
  kb: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1024 ** 3,
};

/** A size option in sectors: "32" → 32 sectors; "16k", "16KiB" → 32 sectors; "1M" → 2048 sectors. */
export function parseSizeOption(text: string, option: string): number {
  const match = /^(\d+)(?:\.(\d+))?\s*([a-zA-Z]*)$/.exec(text.trim());
  if (!match) throw new UsageError(`${option} must be a number of sectors or a size such as 16k or 1M; got "${text}"`);
  const [, whole, fraction, unitText] = match;
  const unit = unitText === '' ? SECTOR_BYTES : UNITS[unitText.toLowerCase()];
  if (unit === undefined) throw new UsageError(`${option}: unknown unit "${unitText}" (use s, b, k, M or G)`);
  const bytes = Number(`${whole}.${fraction ?? '0'}`) * unit;
  if (!Number.isSafeInteger(bytes) || bytes % SECTOR_BYTES !== 0) {
    throw new UsageError(`${option} must be a whole number of 512-byte sectors; got "${text}" (${bytes} bytes)`);
  }
  return bytes / SECTOR_BYTES;
}

/** 1536 → "1.5 KiB" */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let i = 0;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return i === 0 ? `${value} B` : `${value.toFixed(1)} ${units[i]}`;
}

/** --chunk-size in sectors: a power of two the kernel accepts, from 8 sectors (4 KiB) to 2^21 (1 GiB). */
export function parseChunkSize(text: string, option = '--chunk-size'): number {
  const sectors = parseSizeOption(text, option);
  if (!isChunkSize(sectors)) {
    const range = `${formatBytes(MIN_CHUNK_SECTORS * SECTOR_BYTES)} to ${formatBytes(MAX_CHUNK_SECTORS * SECTOR_BYTES)}`;
    throw new UsageError(`${option} must be a power of two from ${MIN_CHUNK_SECTORS} to ${MAX_CHUNK_SECTORS} sectors (${range}); got "${text}" (${sectors} sectors)`);
  }
  return sectors;
}

/** A size option in bytes, read as parseSizeOption reads it (a plain number counts sectors). */
export function parseByteSize(text: string, option: string): number {
  const value = parseSizeOption(text, option) * SECTOR_BYTES;
  if (value === 0) throw new UsageError(`${option} must be larger than 0; got "${text}"`);
  return value;
}
