/**
 * DM_TABLE_LOAD. A table with keys (crypt, integrity) goes with DM_SECURE_DATA_FLAG: the
 * kernel wipes its copy and the addon its buffers; error messages show it masked.
 */
import { DmError } from '../errors';
import { appendHint } from '../explain';
import type { NativeControl, NativeDeviceInfo, NativeDeviceRef, NativeTarget } from '../native';
import { maskTableKeys, tableCarriesKeys } from '../targets/keys';
import { formatTable, type TargetLine } from './table';

type Call = <T>(op: () => Promise<T>) => Promise<T>;

/** Loads `table` into the inactive slot of `ref`; a refusal names the (masked) table and dmesg. */
export async function loadTable(
  call: Call,
  control: NativeControl,
  constants: Readonly<Record<string, number>>,
  ref: NativeDeviceRef,
  table: TargetLine[],
  flagsIn: number,
): Promise<NativeDeviceInfo> {
  const targets: NativeTarget[] = table.map((t) => ({ start: t.start, length: t.length, type: t.type, params: t.params }));
  const flags = tableCarriesKeys(table) ? flagsIn | constants.DM_SECURE_DATA_FLAG! : flagsIn;
  try {
    return await call(() => control.load(ref, targets, flags));
  } catch (error) {
    if (error instanceof DmError && (error.code === 'EINVAL' || error.code === 'ENODEV' || error.code === 'ENOTBLK')) {
      const text = formatTable(maskTableKeys(table)).trimEnd().replace(/\n/g, '; ');
      const why = error.code === 'EINVAL' ? 'the kernel rejected the table' : 'a device named in the table cannot be used in';
      appendHint(error, `${why} "${text}"; see dmesg for the target's reason`);
    }
    throw error;
  }
}
