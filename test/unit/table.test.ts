import { checkTable, formatTable, formatTargetLine, parseTable, splitParams, parseInteger, type TargetLine } from '../../lib/dm/table';
import { InvalidArgumentError } from '../../lib/errors';
import type { Sectors } from '../../lib/units';
import { STATUS_LINES, TABLE_LINES, TABLE_MULTI } from '../fixtures/kernel-lines';

function line(start: number, length: number, type: string, params = ''): TargetLine {
  return { start: start as Sectors, length: length as Sectors, type, params };
}

describe('parseTable', () => {
  it('reads the lines dmsetup table prints', () => {
    expect(parseTable('0 131072 linear 7:0 0')).toEqual([line(0, 131072, 'linear', '7:0 0')]);
    expect(parseTable('0 131072 snapshot 254:1 7:1 P 32')).toEqual([line(0, 131072, 'snapshot', '254:1 7:1 P 32')]);
    expect(parseTable('0 8 zero ')).toEqual([line(0, 8, 'zero', '')]);
    expect(parseTable(TABLE_MULTI)).toEqual([line(0, 8, 'zero'), line(8, 16, 'error'), line(24, 100, 'linear', '7:0 2048')]);
  });

  it('reads status lines, whose shape is the same', () => {
    expect(parseTable('0 131072 snapshot 6208/32768 64')).toEqual([line(0, 131072, 'snapshot', '6208/32768 64')]);
    expect(parseTable('0 131072 snapshot-merge Invalid')).toEqual([line(0, 131072, 'snapshot-merge', 'Invalid')]);
    expect(parseTable('0 131072 linear ')).toEqual([line(0, 131072, 'linear', '')]);
  });

  it.each([...TABLE_LINES, ...STATUS_LINES])('round-trips %j byte for byte', (text) => {
    const lines = parseTable(text);
    expect(lines).toHaveLength(1);
    expect(formatTargetLine(lines[0]!)).toBe(text);
    expect(formatTable(lines)).toBe(`${text}\n`);
  });

  it('round-trips a multi-target table byte for byte', () => {
    expect(formatTable(parseTable(TABLE_MULTI))).toBe(TABLE_MULTI);
  });

  it('splits fields at runs of blanks and keeps the inner whitespace of params', () => {
    expect(parseTable('  0\t8   linear \t /dev/loop0  \t 2048 \t ')).toEqual([line(0, 8, 'linear', '/dev/loop0  \t 2048')]);
  });

  it('skips blank and comment lines and accepts CRLF line ends', () => {
    const text = '# a header\r\n\r\n0 8 zero\r\n   # indented comment\n \t \n8 8 error\r\n';
    expect(parseTable(text)).toEqual([line(0, 8, 'zero'), line(8, 8, 'error')]);
  });

  it('drops a comment after the type, as dmsetup does', () => {
    expect(parseTable('0 8 linear 7:0 0   # the wrapper')).toEqual([line(0, 8, 'linear', '7:0 0')]);
    expect(parseTable('0 8 zero #nothing')).toEqual([line(0, 8, 'zero', '')]);
  });

  it('reads no lines from empty text', () => {
    expect(parseTable('')).toEqual([]);
    expect(parseTable('\n# only a comment\n')).toEqual([]);
  });

  it.each([
    ['x 8 zero', 'table line 1: START must be a non-negative integer; got "x"'],
    ['-1 8 zero', 'table line 1: START must be a non-negative integer; got "-1"'],
    ['0 1.5 zero', 'table line 1: LENGTH must be a non-negative integer; got "1.5"'],
    ['0 0x10 zero', 'table line 1: LENGTH must be a non-negative integer; got "0x10"'],
    ['0 9007199254740992 zero', 'table line 1: LENGTH must be a non-negative integer; got "9007199254740992"'],
    ['\n# comment\n0 8 zero\n8 y zero', 'table line 4: LENGTH must be a non-negative integer; got "y"'],
    ['0 8', 'table line 1 must be START LENGTH TYPE [PARAMS...]; got "0 8"'],
    ['0 8 zero\n  8  ', 'table line 2 must be START LENGTH TYPE [PARAMS...]; got "8"'],
  ])('rejects %j', (text, message) => {
    expect(() => parseTable(text)).toThrow(new InvalidArgumentError(message));
    expect(() => parseTable(text)).toThrow(InvalidArgumentError);
  });

  it('rejects what is not a string', () => {
    expect(() => parseTable(42 as unknown as string)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE', message: 'table must be a string; got 42' }),
    );
  });
});

describe('formatTargetLine and formatTable', () => {
  it('prints a space after the type even when params are empty, as dmsetup does', () => {
    expect(formatTargetLine(line(0, 8, 'zero'))).toBe('0 8 zero ');
    expect(formatTargetLine(line(24, 100, 'linear', '7:0 2048'))).toBe('24 100 linear 7:0 2048');
  });

  it('ends every line with a newline', () => {
    expect(formatTable([])).toBe('');
    expect(formatTable([line(0, 8, 'zero'), line(8, 16, 'error')])).toBe('0 8 zero \n8 16 error \n');
  });
});

describe('checkTable', () => {
  const good = [line(0, 8, 'zero'), line(8, 16, 'error'), line(24, 100, 'linear', '7:0 2048')];

  it('accepts a contiguous table from sector 0', () => {
    expect(() => checkTable(good)).not.toThrow();
    expect(() => checkTable(parseTable(TABLE_MULTI))).not.toThrow();
    expect(() => checkTable([line(0, 1, 'a'.repeat(15))])).not.toThrow();
  });

  it.each<[string, TargetLine[], string]>([
    ['no lines', [], 'table.length must be at least 1; got 0'],
    ['an empty type', [line(0, 8, '')], 'table[0].type must be a target type name of 1 to 15 bytes without whitespace; got ""'],
    ['a type with a space', [line(0, 8, 'snap shot')], 'table[0].type must be a target type name of 1 to 15 bytes without whitespace; got "snap shot"'],
    ['a type with a tab', [line(0, 8, 'zero\t')], 'table[0].type must be a target type name of 1 to 15 bytes without whitespace; got "zero\\t"'],
    [
      'a 16-byte type',
      [line(0, 8, 'a'.repeat(16))],
      `table[0].type must be a target type name of 1 to 15 bytes without whitespace; got "${'a'.repeat(16)}"`,
    ],
    [
      'a type of 8 characters but 16 bytes',
      [line(0, 8, 'é'.repeat(8))],
      `table[0].type must be a target type name of 1 to 15 bytes without whitespace; got "${'é'.repeat(8)}"`,
    ],
    ['a first start other than 0', [line(8, 8, 'zero')], 'table[0].start must be 0; got 8'],
    ['a gap', [line(0, 8, 'zero'), line(10, 8, 'error')], 'table[1].start must be 8, where table[0] ends; got 10'],
    ['an overlap', [line(0, 8, 'zero'), line(8, 8, 'zero'), line(12, 8, 'error')], 'table[2].start must be 16, where table[1] ends; got 12'],
    ['a zero length', [line(0, 0, 'zero')], 'table[0].length must be a positive integer number of sectors; got 0'],
    ['a fractional length', [line(0, 8, 'zero'), line(8, 0.5, 'zero')], 'table[1].length must be a positive integer number of sectors; got 0.5'],
    ['a NUL in params', [line(0, 8, 'linear', '7:0\u00000')], 'table[0].params must be text without NUL bytes or newlines; got "7:0\\u00000"'],
    ['a newline in params', [line(0, 8, 'linear', '7:0\n0')], 'table[0].params must be text without NUL bytes or newlines; got "7:0\\n0"'],
  ])('rejects %s', (_, lines, message) => {
    expect(() => checkTable(lines)).toThrow(new InvalidArgumentError(message));
    expect(() => checkTable(lines)).toThrow(expect.objectContaining({ name: 'InvalidArgumentError', code: 'ERR_INVALID_ARG_VALUE' }));
  });

  it('names the table as told', () => {
    expect(() => checkTable([], 'new table')).toThrow('new table.length must be at least 1; got 0');
    expect(() => checkTable([line(0, 8, 'zero'), line(9, 8, 'zero')], 'new table')).toThrow(
      'new table[1].start must be 8, where new table[0] ends; got 9',
    );
  });

  it('rejects what is not a table', () => {
    expect(() => checkTable(null as unknown as TargetLine[])).toThrow('table must be an array of target lines; got null');
    expect(() => checkTable([null] as unknown as TargetLine[])).toThrow('table[0] must be a target line; got null');
    expect(() => checkTable([{ ...line(0, 8, 'zero'), params: undefined }] as unknown as TargetLine[])).toThrow(
      'table[0].params must be text without NUL bytes or newlines; got undefined',
    );
  });
});

describe('word helpers', () => {
  it('splits params at the whitespace the kernel splits at', () => {
    expect(splitParams('  254:1\t7:1  P 32 ')).toEqual(['254:1', '7:1', 'P', '32']);
    expect(splitParams('')).toEqual([]);
    expect(splitParams(' \t ')).toEqual([]);
    // A no-break space is not whitespace to the kernel.
    expect(splitParams('a\u00a0b c')).toEqual(['a\u00a0b', 'c']);
  });

  it('reads decimal integers only', () => {
    expect(parseInteger('2048', 'n')).toBe(2048);
    expect(parseInteger('0', 'n')).toBe(0);
    expect(() => parseInteger('', 'n')).toThrow('n must be a non-negative integer; got ""');
    expect(() => parseInteger('1e3', 'n')).toThrow('n must be a non-negative integer; got "1e3"');
    expect(() => parseInteger(' 1', 'n')).toThrow('n must be a non-negative integer; got " 1"');
  });
});
