import { checkTable, formatTable, formatTargetLine, parseTable } from '../../lib/dm/table';
import { InvalidArgumentError } from '../../lib/errors';
import {
  errorTarget,
  linear,
  parseLinearParams,
  parseSnapshotMergeParams,
  parseSnapshotMergeStatus,
  parseSnapshotOriginParams,
  parseSnapshotParams,
  parseSnapshotStatus,
  snapshot,
  snapshotMerge,
  snapshotOrigin,
  zeroTarget,
  type SnapshotTargetOptions,
} from '../../lib/targets';
import { bytes, sectors } from '../../lib/units';
import {
  STATUS_SNAPSHOT_2_6_33,
  STATUS_SNAPSHOT_INVALID,
  STATUS_SNAPSHOT_MERGE_INVALID,
  STATUS_SNAPSHOT_ORIGIN,
  STATUS_SNAPSHOT_PERSISTENT,
  STATUS_SNAPSHOT_TRANSIENT,
  TABLE_ERROR,
  TABLE_LINEAR,
  TABLE_MULTI,
  TABLE_SNAPSHOT_MERGE,
  TABLE_SNAPSHOT_ORIGIN,
  TABLE_SNAPSHOT_PERSISTENT,
  TABLE_SNAPSHOT_TRANSIENT,
  TABLE_ZERO,
} from '../fixtures/kernel-lines';

/** The params (or status) of a single captured line. */
function paramsOf(text: string): string {
  const [line, ...rest] = parseTable(text);
  expect(rest).toEqual([]);
  return line!.params;
}

function expectInvalid(fn: () => unknown, message: string): void {
  expect(fn).toThrow(new InvalidArgumentError(message));
  expect(fn).toThrow(InvalidArgumentError);
}

describe('target extents', () => {
  it('start at sector 0 unless told', () => {
    expect(zeroTarget({ length: 8 })).toEqual({ start: 0, length: 8, type: 'zero', params: '' });
    expect(zeroTarget({ start: sectors(8), length: sectors(16) })).toEqual({ start: 8, length: 16, type: 'zero', params: '' });
  });

  it.each([
    [{ length: 0 }, 'length must be a positive integer number of sectors; got 0'],
    [{ length: -8 }, 'length must be a positive integer number of sectors; got -8'],
    [{ length: 1.5 }, 'length must be a positive integer number of sectors; got 1.5'],
    [{ length: Number.NaN }, 'length must be a positive integer number of sectors; got NaN'],
    [{ length: 2 ** 53 }, 'length must be a positive integer number of sectors; got 9007199254740992'],
    [{ start: -1, length: 8 }, 'start must be a non-negative integer number of sectors; got -1'],
    [{ start: 0.5, length: 8 }, 'start must be a non-negative integer number of sectors; got 0.5'],
  ])('rejects %j', (options, message) => {
    expectInvalid(() => zeroTarget(options), message);
    expectInvalid(() => errorTarget(options), message);
    expectInvalid(() => linear({ ...options, device: '7:0' }), message);
    expectInvalid(() => snapshotOrigin({ ...options, origin: '254:1' }), message);
    expectInvalid(() => snapshot({ ...options, origin: '254:1', cow: '7:1', chunkSectors: 32 }), message);
  });

  it('rejects a missing options object', () => {
    expectInvalid(() => zeroTarget(null as never), 'options must be an object; got null');
    expectInvalid(() => linear(undefined as never), 'options must be an object; got undefined');
  });

  it('takes sector counts but not byte counts', () => {
    const size = bytes(512);
    // Compile-time only: the call below must not type-check.
    // @ts-expect-error Bytes are not Sectors
    const wrong = (): unknown => zeroTarget({ length: size });
    expect(typeof wrong).toBe('function');
  });
});

describe('linear', () => {
  it('builds the captured table lines', () => {
    expect(formatTargetLine(linear({ length: 131072, device: '7:0' }))).toBe(TABLE_LINEAR);
    expect(formatTargetLine(linear({ start: 24, length: 100, device: '7:0', offset: sectors(2048) }))).toBe('24 100 linear 7:0 2048');
  });

  it('passes a device path through as given', () => {
    expect(linear({ length: 8, device: '/dev/mapper/md2-real' }).params).toBe('/dev/mapper/md2-real 0');
  });

  it('reads params back', () => {
    expect(parseLinearParams(paramsOf(TABLE_LINEAR))).toEqual({ device: '7:0', offset: 0 });
    expect(parseLinearParams(' /dev/loop0\t 2048 ')).toEqual({ device: '/dev/loop0', offset: 2048 });
    const built = linear({ length: 100, device: '254:3', offset: 96 });
    expect(parseLinearParams(built.params)).toEqual({ device: '254:3', offset: 96 });
  });

  it.each([
    ['', 'device must be a device path or MAJOR:MINOR without whitespace; got ""'],
    ['/dev/my disk', 'device must be a device path or MAJOR:MINOR without whitespace; got "/dev/my disk"'],
    ['7:0\t', 'device must be a device path or MAJOR:MINOR without whitespace; got "7:0\\t"'],
    ['7:0\u0000', 'device must be a device path or MAJOR:MINOR without whitespace; got "7:0\\u0000"'],
  ])('rejects device %j', (device, message) => {
    expectInvalid(() => linear({ length: 8, device }), message);
  });

  it('rejects a device that is not a string and a bad offset', () => {
    expect(() => linear({ length: 8, device: 7 as unknown as string })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE', message: 'device must be a string; got 7' }),
    );
    expectInvalid(() => linear({ length: 8, device: '7:0', offset: -8 }), 'offset must be a non-negative integer number of sectors; got -8');
  });

  it.each([
    ['7:0', 'linear params must be DEVICE OFFSET; got "7:0"'],
    ['', 'linear params must be DEVICE OFFSET; got ""'],
    ['7:0 0 0', 'linear params must be DEVICE OFFSET; got "7:0 0 0"'],
    ['7:0 x', 'linear offset must be a non-negative integer; got "x"'],
    ['7:0 -1', 'linear offset must be a non-negative integer; got "-1"'],
  ])('rejects params %j', (params, message) => {
    expectInvalid(() => parseLinearParams(params), message);
  });
});

describe('snapshot-origin', () => {
  it('builds and reads the captured table line', () => {
    const line = snapshotOrigin({ length: 131072, origin: '254:1' });
    expect(formatTargetLine(line)).toBe(TABLE_SNAPSHOT_ORIGIN);
    expect(parseSnapshotOriginParams(paramsOf(TABLE_SNAPSHOT_ORIGIN))).toEqual({ origin: '254:1' });
    expect(paramsOf(STATUS_SNAPSHOT_ORIGIN)).toBe('');
  });

  it('rejects bad input', () => {
    expectInvalid(() => snapshotOrigin({ length: 8, origin: '' }), 'origin must be a device path or MAJOR:MINOR without whitespace; got ""');
    expectInvalid(() => parseSnapshotOriginParams(''), 'snapshot-origin params must be ORIGIN; got ""');
    expectInvalid(() => parseSnapshotOriginParams('254:1 7:1'), 'snapshot-origin params must be ORIGIN; got "254:1 7:1"');
  });
});

describe('snapshot', () => {
  const base: SnapshotTargetOptions = { length: 131072, origin: '254:1', cow: '7:1', chunkSectors: 32 };

  it('builds the captured table lines', () => {
    expect(formatTargetLine(snapshot(base))).toBe(TABLE_SNAPSHOT_PERSISTENT);
    expect(formatTargetLine(snapshot({ ...base, cow: '7:2', persistent: false, chunkSectors: 16 }))).toBe(TABLE_SNAPSHOT_TRANSIENT);
  });

  it('writes PO and the features as the kernel prints them', () => {
    expect(snapshot({ ...base, overflow: true }).params).toBe('254:1 7:1 PO 32');
    expect(snapshot({ ...base, discardZeroesCow: true }).params).toBe('254:1 7:1 P 32 1 discard_zeroes_cow');
    expect(snapshot({ ...base, discardZeroesCow: true, discardPassdownOrigin: true }).params).toBe(
      '254:1 7:1 P 32 2 discard_zeroes_cow discard_passdown_origin',
    );
    expect(snapshot({ ...base, persistent: true, overflow: false, discardZeroesCow: false }).params).toBe('254:1 7:1 P 32');
  });

  it('accepts the chunk sizes at both ends of the range', () => {
    expect(snapshot({ ...base, chunkSectors: 8 }).params).toBe('254:1 7:1 P 8');
    expect(snapshot({ ...base, chunkSectors: 2097152 }).params).toBe('254:1 7:1 P 2097152');
  });

  it.each([0, 4, 12, 24, 4194304, 16.5, Number.NaN])('rejects chunkSectors %p', (chunkSectors) => {
    expectInvalid(() => snapshot({ ...base, chunkSectors }), `chunkSectors must be a power of two from 8 to 2097152; got ${chunkSectors}`);
  });

  it.each<[Partial<SnapshotTargetOptions>, string]>([
    [{ origin: '' }, 'origin must be a device path or MAJOR:MINOR without whitespace; got ""'],
    [{ cow: '/dev/a b' }, 'cow must be a device path or MAJOR:MINOR without whitespace; got "/dev/a b"'],
    [{ cow: '254:1' }, 'cow must be a device other than the origin; got "254:1"'],
    [{ persistent: 'yes' as unknown as boolean }, 'persistent must be a boolean; got "yes"'],
    [{ overflow: 1 as unknown as boolean }, 'overflow must be a boolean; got 1'],
    [{ persistent: false, overflow: true }, 'overflow must be false for a transient (persistent: false) snapshot; got true'],
    [{ discardPassdownOrigin: true }, 'discardPassdownOrigin must be false unless discardZeroesCow is true; got true'],
    [{ discardZeroesCow: false, discardPassdownOrigin: true }, 'discardPassdownOrigin must be false unless discardZeroesCow is true; got true'],
    [{ discardZeroesCow: 'on' as unknown as boolean }, 'discardZeroesCow must be a boolean; got "on"'],
  ])('rejects %j', (options, message) => {
    expectInvalid(() => snapshot({ ...base, ...options }), message);
  });

  it('reads the captured params', () => {
    expect(parseSnapshotParams(paramsOf(TABLE_SNAPSHOT_PERSISTENT))).toEqual({
      origin: '254:1',
      cow: '7:1',
      persistence: 'P',
      persistent: true,
      overflow: false,
      chunkSectors: 32,
      features: [],
    });
    expect(parseSnapshotParams(paramsOf(TABLE_SNAPSHOT_TRANSIENT))).toEqual({
      origin: '254:1',
      cow: '7:2',
      persistence: 'N',
      persistent: false,
      overflow: false,
      chunkSectors: 16,
      features: [],
    });
  });

  it.each([
    ['p', 'P', true, false],
    ['P', 'P', true, false],
    ['PO', 'PO', true, true],
    ['po', 'PO', true, true],
    ['pO', 'PO', true, true],
    ['n', 'N', false, false],
  ])('reads persistence %s as %s', (store, persistence, persistent, overflow) => {
    expect(parseSnapshotParams(`254:1 7:1 ${store} 32`)).toMatchObject({ persistence, persistent, overflow });
  });

  it('reads features, including ones it does not know', () => {
    const built = snapshot({ ...base, discardZeroesCow: true, discardPassdownOrigin: true });
    expect(parseSnapshotParams(built.params).features).toEqual(['discard_zeroes_cow', 'discard_passdown_origin']);
    expect(parseSnapshotParams('254:1 7:1 P 32 1 some_future_feature').features).toEqual(['some_future_feature']);
    expect(parseSnapshotParams('254:1 7:1 P 32 0').features).toEqual([]);
  });

  it('reads chunk size 0, which the kernel reports for a snapshot whose exceptions it handed over to a merge', () => {
    expect(parseSnapshotParams('254:1 7:1 P 0')).toMatchObject({ cow: '7:1', persistent: true, chunkSectors: 0 });
  });

  it.each([
    ['254:1 7:1 P', 'snapshot params must be ORIGIN COW P|PO|N CHUNK [COUNT FEATURE...]; got "254:1 7:1 P"'],
    ['', 'snapshot params must be ORIGIN COW P|PO|N CHUNK [COUNT FEATURE...]; got ""'],
    ['254:1 7:1 X 32', 'snapshot persistence must be P, PO or N; got "X"'],
    ['254:1 7:1 POO 32', 'snapshot persistence must be P, PO or N; got "POO"'],
    ['254:1 7:1 P 3k', 'snapshot chunk size must be a non-negative integer; got "3k"'],
    ['254:1 7:1 P 32 2 discard_zeroes_cow', 'snapshot feature count must be 1, the number of features that follow; got "2"'],
    ['254:1 7:1 P 32 0 discard_zeroes_cow', 'snapshot feature count must be 1, the number of features that follow; got "0"'],
    ['254:1 7:1 P 32 x', 'snapshot feature count must be a non-negative integer; got "x"'],
  ])('rejects params %j', (params, message) => {
    expectInvalid(() => parseSnapshotParams(params), message);
  });
});

describe('snapshot status', () => {
  it('reads a persistent snapshot in use', () => {
    expect(parseSnapshotStatus(paramsOf(STATUS_SNAPSHOT_PERSISTENT))).toEqual({
      state: 'active',
      allocatedSectors: 6208,
      totalSectors: 32768,
      metadataSectors: 64,
      dataSectors: 6144,
      usedPercent: 18.9453125,
    });
  });

  it('reads a transient snapshot, which has no metadata', () => {
    expect(parseSnapshotStatus(paramsOf(STATUS_SNAPSHOT_TRANSIENT))).toEqual({
      state: 'active',
      allocatedSectors: 6144,
      totalSectors: 32768,
      metadataSectors: 0,
      dataSectors: 6144,
      usedPercent: 18.75,
    });
  });

  it('reads the 2.6.33 line and the older form without metadata', () => {
    expect(parseSnapshotStatus(paramsOf(STATUS_SNAPSHOT_2_6_33))).toEqual({
      state: 'active',
      allocatedSectors: 6496,
      totalSectors: 25189857,
      metadataSectors: 64,
      dataSectors: 6432,
      usedPercent: 649600 / 25189857,
    });
    const old = parseSnapshotStatus('6496/25189857');
    expect(old).toEqual({
      state: 'active',
      allocatedSectors: 6496,
      totalSectors: 25189857,
      metadataSectors: 0,
      dataSectors: 6496,
      usedPercent: 649600 / 25189857,
    });
    expect(old.state === 'active' && old.usedPercent).toBeCloseTo(0.025788, 6);
  });

  it.each([
    [paramsOf(STATUS_SNAPSHOT_INVALID), 'invalid'],
    [paramsOf(STATUS_SNAPSHOT_MERGE_INVALID), 'invalid'],
    ['Merge failed', 'merge-failed'],
    ['Overflow', 'overflow'],
    ['Unknown', 'unknown'],
    [' Invalid ', 'invalid'],
    ['Overflow and more', 'overflow'],
  ])('reads %j as %s', (status, state) => {
    expect(parseSnapshotStatus(status)).toEqual({ state });
  });

  it('ignores what follows the numbers', () => {
    expect(parseSnapshotStatus('64/32768 64 later-field')).toMatchObject({ allocatedSectors: 64, metadataSectors: 64, dataSectors: 0 });
  });

  it('reports 0 % of an empty COW device', () => {
    expect(parseSnapshotStatus('0/0 0')).toMatchObject({ state: 'active', usedPercent: 0 });
  });

  it.each(['', 'garbage', 'invalid', '6208 32768', '6208/x 64', '6208/32768 6x', '/32768 64', '-1/32768 64'])('rejects %j', (status) => {
    expectInvalid(
      () => parseSnapshotStatus(status),
      `snapshot status must be "ALLOCATED/TOTAL METADATA", "Invalid", "Merge failed", "Overflow" or "Unknown"; got ${JSON.stringify(status)}`,
    );
  });

  it('rejects numbers past the safe range', () => {
    expectInvalid(
      () => parseSnapshotStatus('9007199254740993/9007199254740993 64'),
      'snapshot allocated sectors must be a non-negative integer; got "9007199254740993"',
    );
  });
});

describe('snapshot-merge', () => {
  const base: SnapshotTargetOptions = { length: 131072, origin: '254:1', cow: '7:1', chunkSectors: 32 };

  it('builds and reads the captured table line', () => {
    expect(formatTargetLine(snapshotMerge(base))).toBe(TABLE_SNAPSHOT_MERGE);
    expect(parseSnapshotMergeParams(paramsOf(TABLE_SNAPSHOT_MERGE))).toEqual(parseSnapshotParams(paramsOf(TABLE_SNAPSHOT_PERSISTENT)));
    expect(snapshotMerge({ ...base, discardZeroesCow: true }).params).toBe('254:1 7:1 P 32 1 discard_zeroes_cow');
  });

  it('checks its options as snapshot does, and needs a persistent store', () => {
    expectInvalid(() => snapshotMerge({ ...base, chunkSectors: 12 }), 'chunkSectors must be a power of two from 8 to 2097152; got 12');
    expectInvalid(
      () => snapshotMerge({ ...base, persistent: false }),
      'persistent must be true for snapshot-merge, which needs a persistent COW device; got false',
    );
  });

  it('reads its status as a snapshot status', () => {
    expect(parseSnapshotMergeStatus(paramsOf(STATUS_SNAPSHOT_MERGE_INVALID))).toEqual({ state: 'invalid' });
    // Mid-merge, then done: only the metadata is left allocated.
    expect(parseSnapshotMergeStatus('3136/32768 64')).toMatchObject({ state: 'active', dataSectors: 3072 });
    expect(parseSnapshotMergeStatus('64/32768 64')).toMatchObject({ state: 'active', dataSectors: 0 });
  });
});

describe('error and zero', () => {
  it('build the captured table lines', () => {
    expect(formatTargetLine(zeroTarget({ length: 8 }))).toBe(TABLE_ZERO);
    expect(formatTargetLine(errorTarget({ length: 8 }))).toBe(TABLE_ERROR);
  });

  it('make up the captured multi-target table', () => {
    const lines = [
      zeroTarget({ length: 8 }),
      errorTarget({ start: 8, length: 16 }),
      linear({ start: 24, length: 100, device: '7:0', offset: 2048 }),
    ];
    expect(() => checkTable(lines)).not.toThrow();
    expect(formatTable(lines)).toBe(TABLE_MULTI);
    expect(parseTable(TABLE_MULTI)).toEqual(lines);
  });
});
