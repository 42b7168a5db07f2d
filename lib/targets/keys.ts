/**
 * Keys in tables. The crypt target's key and the integrity target's keyed hash and
 * journal keys are parameters of their table lines, and the kernel prints them back in
 * hex when the table is read. `DeviceMapper.table()` returns them as the kernel does,
 * because a table read to be loaded again must keep its keys; these helpers hide them
 * for display, exactly as `dmsetup table` does unless given `--showkeys`:
 *
 * - crypt (`CIPHER KEY IV_OFFSET DEVICE OFFSET ...`): every byte of KEY becomes `0`,
 *   unless KEY is a kernel keyring reference (`:SIZE:TYPE:DESCRIPTION`), which is shown;
 * - integrity: the key after `internal_hash:ALG:`, `journal_crypt:ALG:` and
 *   `journal_mac:ALG:` (the first occurrence of each), up to the next space, becomes
 *   `0`s; an algorithm given without a key is left as it is.
 *
 * Other targets are returned unchanged. Masking works on the UTF-8 bytes, as dmsetup
 * does, so the result matches its output byte for byte.
 */
import type { TargetLine } from '../dm/table';

const SPACE = 0x20;
const COLON = 0x3a;
const ZERO = 0x30;

/** The target types whose table lines can hold a key. */
export const KEYED_TARGET_TYPES: readonly string[] = Object.freeze(['crypt', 'integrity']);

/** Whether lines of this target type can hold a key (crypt, integrity). */
export function targetCarriesKeys(type: string): boolean {
  return KEYED_TARGET_TYPES.includes(type);
}

/** Whether any line of the table is of a type that can hold a key. */
export function tableCarriesKeys(lines: readonly Pick<TargetLine, 'type'>[]): boolean {
  return lines.some((line) => targetCarriesKeys(line.type));
}

/** Replaces bytes with '0' from `from` up to the next space or the end. */
function zeroWord(bytes: Buffer, from: number): void {
  for (let i = from; i < bytes.length && bytes[i] !== SPACE; i++) bytes[i] = ZERO;
}

/** crypt: the second word is the key, unless it is a keyring reference (starts with ':'). */
function maskCryptKey(bytes: Buffer): void {
  const space = bytes.indexOf(SPACE);
  const key = space < 0 ? bytes.length : space + 1;
  if (key < bytes.length && bytes[key] !== COLON) zeroWord(bytes, key);
}

/** integrity: `NAME ALG:KEY` → the KEY after the first ':' that follows NAME, if one comes before a space. */
function maskNamedKey(bytes: Buffer, name: string): void {
  const at = bytes.indexOf(name, 0, 'utf8');
  if (at < 0) return;
  for (let i = at + Buffer.byteLength(name); i < bytes.length; i++) {
    if (bytes[i] === SPACE) return;
    if (bytes[i] === COLON) return zeroWord(bytes, i + 1);
  }
}

/** A target's params with its keys hidden as `dmsetup table` hides them (see above). */
export function maskTargetKeys(type: string, params: string): string {
  if (!targetCarriesKeys(type)) return params;
  const bytes = Buffer.from(params, 'utf8');
  if (type === 'crypt') {
    maskCryptKey(bytes);
  } else {
    for (const name of ['internal_hash:', 'journal_crypt:', 'journal_mac:']) maskNamedKey(bytes, name);
  }
  const masked = bytes.toString('utf8');
  bytes.fill(0);
  return masked;
}

/** A copy of the table with every key hidden as `dmsetup table` hides it; other lines are unchanged. */
export function maskTableKeys(lines: readonly TargetLine[]): TargetLine[] {
  return lines.map((line) => ({ ...line, params: maskTargetKeys(line.type, line.params) }));
}
