/**
 * The zero target: reads return zeroes and writes are discarded, like /dev/zero.
 */
import { checkExtent, type TargetExtent, type TargetLine } from '../dm/table';

/** A zero target line; it takes no params (the kernel rejects any). */
export function zeroTarget(options: TargetExtent): TargetLine {
  return { ...checkExtent(options), type: 'zero', params: '' };
}
