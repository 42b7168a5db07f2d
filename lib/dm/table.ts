/**
 * Table text: the `START LENGTH TYPE PARAMS` lines that describe a device-mapper device.
 * They are read and written exactly as dmsetup reads and prints them, so that tables and
 * status can be compared with its output and pasted into it. Also the helpers the target
 * modules (lib/targets/) share to build and read such lines.
 */
import { sectors, type Bytes, type Sectors } from '../units';
import { check, checkString } from '../validate';

/** One line of a device-mapper table (or of a status listing): sectors, target type and its parameter (or status) text. */
export interface TargetLine {
  /** The first sector of the device that this target maps. */
  start: Sectors;
  /** How many sectors it maps. */
  length: Sectors;
  /** The target type, e.g. 'linear' or 'snapshot'. */
  type: string;
  /** The target's parameters (in a table) or its status (in a status listing); may be empty. */
  params: string;
}

// The characters C's isspace() accepts: the kernel (dm_split_args) and dmsetup split on
// these, so "whitespace" here means exactly these and not JavaScript's wider \s.
const BLANK = '\\t\\n\\v\\f\\r ';
const LEADING_BLANKS = new RegExp(`^[${BLANK}]+`);
const TRAILING_BLANKS = new RegExp(`[${BLANK}]+$`);
const BLANKS = new RegExp(`[${BLANK}]+`);
const WORD = `[^${BLANK}]+`;
const LINE = new RegExp(`^(${WORD})[${BLANK}]+(${WORD})[${BLANK}]+(${WORD})(?:[${BLANK}]+([^]*))?$`);
const WORD_WITHOUT_NUL = new RegExp(`^[^${BLANK}\\0]+$`);

/** DM_MAX_TYPE_NAME: the kernel's buffer for a type name, NUL included. */
const MAX_TYPE_NAME_BYTES = 16;

/**
 * Parses table text as `dmsetup create` and `dmsetup load` read it: one target a line,
 * `START LENGTH TYPE [PARAMS...]`. Blank lines and lines starting with `#` are skipped,
 * and as in dmsetup a `#` after the type starts a comment. PARAMS keeps its inner
 * whitespace. Also reads `dmsetup status` output, whose lines have the same shape.
 * Lines may end in `\n` or `\r\n`.
 */
export function parseTable(text: string): TargetLine[] {
  checkString(text, 'table');
  const lines: TargetLine[] = [];
  text.split('\n').forEach((raw, index) => {
    const name = `table line ${index + 1}`;
    const trimmed = raw.replace(LEADING_BLANKS, '').replace(TRAILING_BLANKS, '');
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const match = LINE.exec(trimmed);
    check(match !== null, name, 'START LENGTH TYPE [PARAMS...]', trimmed);
    const [, start, length, type, rest = ''] = match;
    const comment = rest.indexOf('#');
    lines.push({
      start: parseSectors(start, `${name}: START`),
      length: parseSectors(length, `${name}: LENGTH`),
      type,
      // What precedes a comment may end in blanks; the kernel ignores them anyway.
      params: comment < 0 ? rest : rest.slice(0, comment).replace(TRAILING_BLANKS, ''),
    });
  });
  return lines;
}

/**
 * One line as `dmsetup table` and `dmsetup status` print it, without the newline. An
 * empty params still gets its separating space ("0 8 zero "), as dmsetup prints it.
 */
export function formatTargetLine(line: TargetLine): string {
  return `${line.start} ${line.length} ${line.type} ${line.params}`;
}

/** Table text as `dmsetup table` prints it: every line followed by a newline. */
export function formatTable(lines: readonly TargetLine[]): string {
  return lines.map((line) => `${formatTargetLine(line)}\n`).join('');
}

/**
 * Checks a table before it is sent to the kernel, so that a mistake is reported by
 * name rather than as a bare EINVAL: at least one line, valid type names, and targets
 * that cover the device from sector 0 without gaps or overlaps, as the kernel demands.
 * `name` is used in the messages ("table[1].start must be ...").
 */
export function checkTable(lines: readonly TargetLine[], name = 'table'): void {
  check(Array.isArray(lines), name, 'an array of target lines', lines);
  check(lines.length > 0, `${name}.length`, 'at least 1', lines.length);
  let end = 0;
  lines.forEach((line: Partial<TargetLine> | null, index) => {
    const at = `${name}[${index}]`;
    check(typeof line === 'object' && line !== null, at, 'a target line', line);
    const { start, length, type, params } = line;
    check(
      typeof type === 'string' && WORD_WITHOUT_NUL.test(type) && Buffer.byteLength(type) < MAX_TYPE_NAME_BYTES,
      `${at}.type`,
      `a target type name of 1 to ${MAX_TYPE_NAME_BYTES - 1} bytes without whitespace`,
      type,
    );
    check(start === end, `${at}.start`, index === 0 ? '0' : `${end}, where ${name}[${index - 1}] ends`, start);
    check(
      typeof length === 'number' && Number.isSafeInteger(length) && length > 0 && Number.isSafeInteger(end + length),
      `${at}.length`,
      'a positive integer number of sectors',
      length,
    );
    check(typeof params === 'string' && !/[\0\n]/.test(params), `${at}.params`, 'text without NUL bytes or newlines', params);
    end += length;
  });
}

/**
 * A sector count as an argument: a `Sectors` value or a plain number (checked when
 * used), but not `Bytes`, which the compiler rejects.
 */
// The brand's key is not exported from units.ts; it is the one key Bytes has that
// number does not.
export type SectorCount = number & { readonly [K in Exclude<keyof Bytes, keyof number>]?: 'sectors' };

/** Where a target sits in its table. */
export interface TargetExtent {
  /** The first sector of the device that the target maps; 0 by default. */
  start?: SectorCount;
  /** How many sectors the target maps; must be positive. */
  length: SectorCount;
}

/** Checks a target's options object and its extent; shared by the target modules. */
export function checkExtent(options: TargetExtent): { start: Sectors; length: Sectors } {
  check(typeof options === 'object' && options !== null, 'options', 'an object', options);
  const start = sectors(options.start ?? 0, 'start');
  const { length } = options;
  check(Number.isSafeInteger(length) && length > 0, 'length', 'a positive integer number of sectors', length);
  return { start, length: length as number as Sectors };
}

/**
 * Checks a device reference for a table: a path such as /dev/loop0 or MAJOR:MINOR. It
 * must be one word, because the kernel splits parameters at whitespace.
 */
export function checkDevice(value: unknown, name: string): asserts value is string {
  checkString(value, name);
  check(WORD_WITHOUT_NUL.test(value), name, 'a device path or MAJOR:MINOR without whitespace', value);
}

/** Splits parameter or status text into words at whitespace, as the kernel does. */
export function splitParams(params: string, name = 'params'): string[] {
  checkString(params, name);
  const trimmed = params.replace(LEADING_BLANKS, '').replace(TRAILING_BLANKS, '');
  return trimmed === '' ? [] : trimmed.split(BLANKS);
}

/** Reads a decimal non-negative integer, as the kernel prints them. */
export function parseInteger(word: string, name: string): number {
  const value = Number(word);
  check(/^[0-9]+$/.test(word) && Number.isSafeInteger(value), name, 'a non-negative integer', word);
  return value;
}

/** Reads a decimal sector count. */
export function parseSectors(word: string, name: string): Sectors {
  return parseInteger(word, name) as Sectors;
}
