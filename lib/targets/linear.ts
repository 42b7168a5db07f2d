/**
 * The linear target: maps its sectors one to one onto a range of another device. dmsnap
 * mounts filesystems on a linear wrapper so that the table can later be swapped for a
 * snapshot-origin without unmounting.
 */
import { checkDevice, checkExtent, parseSectors, splitParams, type SectorCount, type TargetExtent, type TargetLine } from '../dm/table';
import { sectors, type Sectors } from '../units';
import { check } from '../validate';

/** Options of linear(). */
export interface LinearOptions extends TargetExtent {
  /** The device to map onto: a path such as /dev/loop0, or MAJOR:MINOR such as 7:0. */
  device: string;
  /** The sector of `device` where the mapping begins; 0 by default. */
  offset?: SectorCount;
}

/** The parameters of a linear target. */
export interface LinearParams {
  /** As given; the kernel reports it back as MAJOR:MINOR. */
  device: string;
  offset: Sectors;
}

/** A linear target line: params `DEVICE OFFSET`. */
export function linear(options: LinearOptions): TargetLine {
  const extent = checkExtent(options);
  checkDevice(options.device, 'device');
  const offset = sectors(options.offset ?? 0, 'offset');
  return { ...extent, type: 'linear', params: `${options.device} ${offset}` };
}

/** Reads a linear target's params, e.g. "7:0 2048" from `dmsetup table`. */
export function parseLinearParams(params: string): LinearParams {
  const words = splitParams(params, 'linear params');
  check(words.length === 2, 'linear params', 'DEVICE OFFSET', params);
  const [device, offset] = words as [string, string];
  return { device, offset: parseSectors(offset, 'linear offset') };
}
