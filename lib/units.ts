/**
 * Units. Device-mapper tables count 512-byte sectors whatever the device's own sector
 * size; block devices report bytes. Branded types keep the two apart at compile time:
 * a `Bytes` value cannot be passed where `Sectors` are expected without a conversion.
 */
import { check } from './validate';

declare const unitBrand: unique symbol;

/** A count of 512-byte sectors, the unit of device-mapper tables. */
export type Sectors = number & { readonly [unitBrand]: 'sectors' };
/** A count of bytes. */
export type Bytes = number & { readonly [unitBrand]: 'bytes' };

/** Bytes per device-mapper sector. */
export const SECTOR_BYTES = 512;

/** Marks a non-negative safe integer as a sector count. */
export function sectors(value: number, name = 'sectors'): Sectors {
  check(Number.isSafeInteger(value) && value >= 0, name, 'a non-negative integer number of sectors', value);
  return value as Sectors;
}

/** Marks a non-negative safe integer as a byte count. */
export function bytes(value: number, name = 'bytes'): Bytes {
  check(Number.isSafeInteger(value) && value >= 0, name, 'a non-negative integer number of bytes', value);
  return value as Bytes;
}

/** Whole sectors in a byte count; rejects a count that is not a multiple of 512. */
export function bytesToSectors(value: Bytes, name = 'size'): Sectors {
  check(value % SECTOR_BYTES === 0, name, `a multiple of ${SECTOR_BYTES} bytes`, value);
  return (value / SECTOR_BYTES) as Sectors;
}

/** Bytes in a sector count (× 512). */
export function sectorsToBytes(value: Sectors): Bytes {
  return (value * SECTOR_BYTES) as Bytes;
}
