import { InvalidArgumentError } from '../../lib/errors';
import { bytes, bytesToSectors, sectors, sectorsToBytes } from '../../lib/units';
import { check, checkInteger, checkPath } from '../../lib/validate';

describe('units', () => {
  it('converts between bytes and sectors', () => {
    expect(bytesToSectors(bytes(67108864))).toBe(131072);
    expect(sectorsToBytes(sectors(32))).toBe(16384);
  });

  it('rejects byte counts that are not whole sectors', () => {
    expect(() => bytesToSectors(bytes(1000))).toThrow('size must be a multiple of 512 bytes; got 1000');
  });

  it.each([-1, 1.5, Number.NaN, 2 ** 53])('rejects %p as a count', (value) => {
    expect(() => sectors(value)).toThrow(InvalidArgumentError);
    expect(() => bytes(value)).toThrow(InvalidArgumentError);
  });
});

describe('validation', () => {
  it('raises one error shape with the argument name and value', () => {
    expect(() => check(false, 'chunkSectors', 'a power of two', 3)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: 'chunkSectors must be a power of two; got 3' }),
    );
    expect(() => checkPath(42, 'path')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => checkPath('', 'path')).toThrow(/non-empty path/);
    expect(() => checkPath('/dev/a\0b', 'path')).toThrow(/without NUL/);
    expect(() => checkInteger(7, 'n', 8, 16)).toThrow('n must be an integer from 8 to 16; got 7');
    expect(() => checkInteger(9, 'n', 8, 16)).not.toThrow();
  });
});
