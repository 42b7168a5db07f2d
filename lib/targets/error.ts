/**
 * The error target: fails every I/O. Useful to keep a device's name and size while
 * nothing may reach what lies below it.
 */
import { checkExtent, type TargetExtent, type TargetLine } from '../dm/table';

/** An error target line; it takes no params. */
export function errorTarget(options: TargetExtent): TargetLine {
  return { ...checkExtent(options), type: 'error', params: '' };
}
