import { DMSNAP_ERROR_CODES, DmError, DmsnapError, SyscallError, errnoCode, errnoText } from '../../lib/errors';
import { explainFailure } from '../../lib/explain';
import { makeSyscallError } from '../../lib/native';

describe('errno names', () => {
  it.each([
    [2, 'ENOENT'],
    [6, 'ENXIO'],
    [13, 'EACCES'],
    [15, 'ENOTBLK'],
    [16, 'EBUSY'],
    [22, 'EINVAL'],
    [61, 'ENODATA'],
  ])('errno %i is %s', (errno, code) => {
    expect(errnoCode(errno)).toBe(code);
    expect(errnoCode(-errno)).toBe(code);
  });

  it('names an unknown errno by number', () => {
    expect(errnoCode(4000)).toBe('E4000');
    expect(errnoText(4000)).toBe('errno 4000');
  });
});

describe('makeSyscallError', () => {
  it('makes a DmError for device-mapper ioctls, with Node-style fields', () => {
    const error = makeSyscallError({ errno: 16, syscall: 'ioctl', ioctl: 'DM_DEV_REMOVE', path: '/dev/mapper/control', device: 'md2' });
    expect(error).toBeInstanceOf(DmError);
    expect(error).toBeInstanceOf(SyscallError);
    expect(error).toBeInstanceOf(DmsnapError);
    expect(error).toMatchObject({ name: 'DmError', code: 'EBUSY', errno: -16, syscall: 'ioctl', ioctl: 'DM_DEV_REMOVE', device: 'md2' });
    expect(error.message).toBe(
      'DM_DEV_REMOVE on device-mapper device "md2" failed: resource busy or locked (EBUSY); the device is in use ' +
        '(mounted, held open, or used by another device-mapper table): unmount it or remove its users first, or remove it deferred',
    );
  });

  it('makes a SyscallError for block-device calls', () => {
    const error = makeSyscallError({ errno: 25, syscall: 'ioctl', ioctl: 'BLKGETSIZE64', path: '/dev/sdz' });
    expect(error).not.toBeInstanceOf(DmError);
    expect(error).toMatchObject({ name: 'SyscallError', code: 'ENOTTY', path: '/dev/sdz' });
  });
});

describe('explainFailure', () => {
  it('tells to load dm-mod when the control node is missing', () => {
    expect(explainFailure({ errno: 2, syscall: 'open', path: '/dev/mapper/control' })).toBe(
      'open /dev/mapper/control failed: no such file or directory (ENOENT); the device-mapper driver is not loaded: run "modprobe dm-mod" as root ' +
        '(loading it makes the kernel, or udev, create /dev/mapper/control)',
    );
  });

  it('tells to run as root on EACCES and EPERM', () => {
    expect(explainFailure({ errno: 13, syscall: 'open', path: '/dev/mapper/control' })).toMatch(/permission denied \(EACCES\); .*run as root$/);
    expect(explainFailure({ errno: 1, syscall: 'ioctl', ioctl: 'DM_VERSION', path: '/dev/mapper/control' })).toMatch(/\(EPERM\); .*run as root$/);
  });

  it('says which device does not exist on ENXIO', () => {
    expect(explainFailure({ errno: 6, syscall: 'ioctl', ioctl: 'DM_DEV_STATUS', path: '/dev/mapper/control', device: 'x' })).toBe(
      'DM_DEV_STATUS on device-mapper device "x" failed: no such device or address (ENXIO); no device-mapper device named "x" exists',
    );
  });
});

describe('the exported list of codes', () => {
  /** Every 'ERR_…' string literal in lib/, by file. */
  function codesInSource(): Map<string, string> {
    const { readdirSync, readFileSync } = require('node:fs') as typeof import('node:fs');
    const { join } = require('node:path') as typeof import('node:path');
    const found = new Map<string, string>();
    const walk = (dir: string) => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) walk(path);
        else if (entry.name.endsWith('.ts') && path !== join('lib', 'errors.ts')) {
          for (const [, code] of readFileSync(path, 'utf8').matchAll(/'(ERR_[A-Z_]+)'/g)) found.set(code!, path);
        }
      }
    };
    walk('lib');
    return found;
  }

  it('names every code lib/ raises, and only those', () => {
    const used = codesInSource();
    expect([...used.keys()].filter((code) => !(DMSNAP_ERROR_CODES as readonly string[]).includes(code))).toEqual([]);
    expect(DMSNAP_ERROR_CODES.filter((code) => !used.has(code))).toEqual([]);
  });
});
