/**
 * Bad input never changes state: each case gets a clear message and exit code, and the
 * whole device-mapper state (devices, tables, suspended flags) is the same afterwards.
 * Here the cases the kernel or the system decides; the command line's own (names, sizes,
 * options, unknown origins and snapshots) are proven on the fake kernel in
 * test/unit/bad-input.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { cli, createLoopDevice, dmsetupState, run } from './support/system';

const MiB = 1024 * 1024;
const name = `bad${process.pid}`;
let disk: string;
let cow: string;
let small: string;
let ext4Cow: string;
let readOnlyCow: string;
let mountedDisk: string;
let mountDir: string;

describe('bad input', () => {
  beforeAll(() => {
    disk = createLoopDevice(32 * MiB);
    cow = createLoopDevice(8 * MiB);
    small = createLoopDevice(64 * 1024);
    ext4Cow = createLoopDevice(8 * MiB);
    run('mkfs.ext4', ['-q', ext4Cow]);
    readOnlyCow = createLoopDevice(8 * MiB);
    run('blockdev', ['--setro', readOnlyCow]);
    mountedDisk = createLoopDevice(16 * MiB);
    run('mkfs.ext4', ['-q', mountedDisk]);
    mountDir = mkdtempSync('/tmp/dmsnap-bad-');
    run('mount', [mountedDisk, mountDir]);
    expect(cli(['prepare', disk, '--name', name]).status).toBe(0);
    expect(cli(['snapshot', name, '--cow', cow, '--snapshot-name', `${name}-taken`]).status).toBe(0);
  });

  afterAll(() => {
    run('umount', [mountDir]);
    cli(['drop', name]);
    cli(['release', name]);
  });

  const file = () => {
    const path = `${mkdtempSync('/tmp/dmsnap-file-')}/plain`;
    writeFileSync(path, Buffer.alloc(1024 * 1024));
    return path;
  };

  type Case = [string, () => string[], number, RegExp];
  const cases: Case[] = [
    ['prepare of a regular file', () => ['prepare', file(), '--name', `${name}x`], 1, /not a block device/],
    ['a COW smaller than the minimum', () => ['snapshot', name, '--cow', small, '--chunk-size', '64'], 1, /needs at least/],
    ['the origin as its own COW', () => ['snapshot', name, '--cow', `/dev/mapper/${name}`, '--snapshot-name', `${name}-s2`], 1, /shares blocks with it/],
    ['the backing device as the COW', () => ['snapshot', name, '--cow', disk, '--snapshot-name', `${name}-s2`], 1, /shares blocks with it/],
    ['a COW in use by another snapshot', () => ['snapshot', name, '--cow', cow, '--snapshot-name', `${name}-s2`], 4, /in use/],
    ['a COW with a filesystem', () => ['snapshot', name, '--cow', ext4Cow, '--snapshot-name', `${name}-s2`], 1, /holds an ext4 filesystem/],
    ['a read-only COW', () => ['snapshot', name, '--cow', readOnlyCow, '--snapshot-name', `${name}-s2`], 1, /read-only/],
    ['a regular file as the COW', () => ['snapshot', name, '--cow', file(), '--snapshot-name', `${name}-s2`], 1, /not a block device/],
    ['prepare of a mounted device', () => ['prepare', mountedDisk, '--name', `${name}m`], 4, /must run before the filesystem is mounted/],
  ];

    it.each(cases)('refuses %s', (_what, args, code, message) => {
      const argv = args();
      const before = dmsetupState();
      const result = cli(argv);
      expect({ status: result.status, stdout: result.stdout }).toEqual({ status: code, stdout: '' });
      expect(result.stderr).toMatch(message);
      expect(dmsetupState()).toBe(before);
    });

    it('refuses a non-root caller', () => {
      const before = dmsetupState();
      const result = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, 'dist/dmsnap.js', 'snapshot', name, '--cow', cow], {
        encoding: 'utf8',
        env: { ...process.env, DMSNAP_LOCK_DIR: mkdtempSync('/tmp/dmsnap-nobody-') },
      });
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(/run as root/);
      expect(dmsetupState()).toBe(before);
    });

    it('says to load dm-snapshot when the kernel lacks it', () => {
      cli(['drop', name]);
      const before = dmsetupState();
      run('rmmod', ['dm_snapshot']);
      try {
        const result = cli(['snapshot', name, '--cow', cow]);
        expect(result.status).toBe(1);
        expect(result.stderr).toMatch(/modprobe dm-snapshot/);
        expect(dmsetupState()).toBe(before);
      } finally {
        run('insmod', ['/run/dmsnap-modules/dm-snapshot.ko']);
      }
      expect(cli(['snapshot', name, '--cow', cow, '--snapshot-name', `${name}-taken`]).status).toBe(0);
    });
});

describe('a COW that lives on the origin itself', () => {
  it("refuses a loop device whose backing file is on the origin's filesystem, and changes nothing", () => {
    const own = `badloop${process.pid}`;
    expect(cli(['prepare', createLoopDevice(32 * MiB), '--name', own]).status).toBe(0);
    run('mkfs.ext4', ['-q', `/dev/mapper/${own}`]);
    const dir = mkdtempSync('/tmp/dmsnap-badloop-');
    run('mount', [`/dev/mapper/${own}`, dir]);
    const file = `${dir}/cow.img`;
    writeFileSync(file, Buffer.alloc(4 * MiB));
    const loop = run('losetup', ['--find', '--show', file]).trim();
    try {
      const before = dmsetupState();
      const result = cli(['snapshot', own, '--cow', loop]);
      expect({ status: result.status, stderr: result.stderr }).toEqual({ status: 1, stderr: expect.stringMatching(/backing file lives on the filesystem of/) });
      expect(dmsetupState()).toBe(before);
    } finally {
      cli(['drop', own]);
      run('losetup', ['--detach', loop]);
      run('umount', [dir]);
      expect(cli(['release', own]).status).toBe(0);
    }
  });
});
