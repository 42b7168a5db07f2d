/**
 * COW files on a real kernel: the seed scenario with the COW in a file on an ext4
 * filesystem of another device, the refusal of a file on the origin's own filesystem (also
 * through a loop device, and on btrfs, whose st_dev is anonymous), the
 * default size holding a full overwrite of the origin (and a smaller one not), and a
 * SIGKILL after every step followed by `recover`, which must leave no loop device, no
 * file and no record behind.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join, relative } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DeviceMapper, prepare, type Origin } from '../../lib';
import { loadBinding } from '../../lib/native';
import { persistentCowSectors } from '../../lib/targets/snapshot';
import { guardCowFile } from '../../lib/snapshot/cow-guard';
import { invariantViolations } from './support/invariants';
import { deviceSha, runCli, SNAPSHOT_STEPS } from './support/model';
import { cellRole, cli, createLoopDevice, run, scratchDir, withUdev } from './support/system';

const MiB = 1024 * 1024;
const RECORDS = '/run/lock/dmsnap/cow-files';

function manifest(root: string): Map<string, string> {
  const sums = new Map<string, string>();
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.name === 'lost+found') continue;
      if (entry.isDirectory()) walk(path);
      else sums.set(relative(root, path), createHash('sha256').update(readFileSync(path)).digest('hex'));
    }
  };
  walk(root);
  return sums;
}

/** Loop devices whose backing file is in `dir` (from sysfs, not from dmsnap). */
function loopsInto(dir: string): string[] {
  return readdirSync('/sys/block')
    .filter((name) => name.startsWith('loop') && existsSync(`/sys/block/${name}/loop/backing_file`))
    .filter((name) => readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').startsWith(`${dir}/`));
}

const records = () => (existsSync(RECORDS) ? readdirSync(RECORDS) : []);

/** Nothing of a COW file is left: no loop device on it, no file (or temporary file), no record. */
function expectNothingLeft(dir: string): void {
  expect(loopsInto(dir)).toEqual([]);
  expect(readdirSync(dir).filter((f) => f !== 'lost+found')).toEqual([]);
  expect(records()).toEqual([]);
}

// One block around all: its afterAll unmounts before the leak check of the file runs.
// The cells with udev run what udev changes: loop devices and the devices over them
// appearing and going (the seed scenario, kills and recover); what a filesystem or the
// kernel does with the file (btrfs, sizes, preallocation, autoextend) is the same with or
// without udev and runs in the kernel cells.
const kernelCells = withUdev ? describe.skip : describe;

describe('COW files', () => {
  let dm: DeviceMapper;
  let hostDisk: string;
  let host: string;

  beforeAll(async () => {
    dm = await DeviceMapper.open();
    // The filesystem that holds the COW files: ext4 on a device of its own.
    hostDisk = createLoopDevice(256 * MiB);
    run('mkfs.ext4', ['-q', '-F', hostDisk]);
    host = mkdtempSync(join(scratchDir(), 'cowfs-'));
    run('mount', [hostDisk, host]);
  });

  afterAll(() => {
    run('umount', [host]);
    rmSync(host, { recursive: true, force: true });
    dm.close();
  });

  describe('the seed scenario with a COW file', () => {
    let origin: Origin;
    let mnt: string;
    beforeAll(async () => {
      origin = await prepare(createLoopDevice(320 * MiB), { dm, name: `cfseed${process.pid}` });
      run('mkfs.xfs', ['-q', '-f', origin.devicePath]);
      mnt = mkdtempSync(join(scratchDir(), 'cforigin-'));
      run('mount', [origin.devicePath, mnt]);
    });
    afterAll(async () => {
      run('umount', [mnt]);
      await origin.release();
    });

    it('freezes the filesystem as it was, with the COW in a file on another filesystem, and leaves nothing after drop', async () => {
      for (let i = 0; i < 8; i++) writeFileSync(join(mnt, `file${i}`), randomBytes(256 * 1024));
      run('sync', []);
      const expected = manifest(mnt);
      const path = join(host, 'seed.cow');
      const snap = await origin.snapshot({ cowFile: { path } });
      try {
        expect(readFileSync(`/sys/block/loop${snap.info.cowDevice.minor}/loop/backing_file`, 'utf8').trim()).toBe(path);
        expect(readFileSync(`/sys/block/loop${snap.info.cowDevice.minor}/loop/autoclear`, 'utf8').trim()).toBe('1');
        const status = await snap.status();
        expect(status.state).toBe('active');
        expect(status.totalSectors).toBe(persistentCowSectors(origin.sizeSectors, snap.info.chunkSectors));
        for (let i = 0; i < 8; i++) writeFileSync(join(mnt, `file${i}`), randomBytes(128 * 1024));
        run('sync', []);
        const snapDir = mkdtempSync(join(scratchDir(), 'cfsnap-'));
        await snap.mount(snapDir);
        try {
          expect(manifest(snapDir)).toEqual(expected);
        } finally {
          await snap.unmount();
        }
        run('xfs_repair', ['-n', snap.devicePath]);
        expect((await snap.status()).state).toBe('active');
      } finally {
        await snap.drop();
      }
      expectNothingLeft(host);
      expect(invariantViolations()).toEqual([]);
    });

    it('backs up through the CLI with --cow-file, and leaves nothing behind', () => {
      const result = cli(['backup', origin.name, '--cow-file', join(host, 'backup.cow'), '-q', '--', 'sh', '-c', 'ls file0 && test -f "$DMSNAP_MOUNT/file7"']);
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      expectNothingLeft(host);
    });

    it("refuses a COW file on the origin's own filesystem, and creates nothing", async () => {
      const error = await origin.snapshot({ cowFile: { path: join(mnt, 'inside.cow') } }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'ERR_DMSNAP_COW_IN_ORIGIN' });
      expect((error as Error).message).toMatch(/filesystem of cfseed/);
      expect(existsSync(join(mnt, 'inside.cow'))).toBe(false);
      expect(readdirSync(mnt).filter((f) => f.includes('dmsnap'))).toEqual([]);
      expect(await origin.snapshots()).toEqual([]);
      expect(records()).toEqual([]);
    });

    it('refuses a COW file on a filesystem whose loop device serves a file on the origin', async () => {
      const nestedFile = join(mnt, 'nested.img');
      writeFileSync(nestedFile, '');
      truncateSync(nestedFile, 64 * MiB);
      const nested = run('losetup', ['--find', '--show', nestedFile]).trim();
      run('mkfs.ext4', ['-q', '-F', nested]);
      const nestedDir = mkdtempSync(join(scratchDir(), 'cfnested-'));
      run('mount', [nested, nestedDir]);
      try {
        const error = await origin.snapshot({ cowFile: { path: join(nestedDir, 'nested.cow') } }).catch((e: unknown) => e);
        expect(error).toMatchObject({ code: 'ERR_DMSNAP_COW_IN_ORIGIN' });
        expect(readdirSync(nestedDir).filter((f) => f !== 'lost+found')).toEqual([]);
        expect(await origin.snapshots()).toEqual([]);
      } finally {
        run('umount', [nestedDir]);
        run('losetup', ['-d', nested]);
        rmSync(nestedFile);
      }
    });
  });

  kernelCells('an origin with btrfs (anonymous device numbers)', () => {
    let origin: Origin;
    let mnt: string;
    let subMnt: string;
    beforeAll(async () => {
      origin = await prepare(createLoopDevice(256 * MiB), { dm, name: `cfbtrfs${process.pid}` });
      run('mkfs.btrfs', ['-q', '-f', origin.devicePath]);
      mnt = mkdtempSync(join(scratchDir(), 'cfbtrfs-'));
      run('mount', [origin.devicePath, mnt]);
      run('btrfs', ['subvolume', 'create', join(mnt, 'sub')]);
      subMnt = mkdtempSync(join(scratchDir(), 'cfbtrfssub-'));
      run('mount', ['-o', 'subvol=sub', origin.devicePath, subMnt]);
    });
    afterAll(async () => {
      run('umount', [subMnt]);
      run('umount', [mnt]);
      await origin.release();
    });

    it('refuses a COW file on it, on its top and in a subvolume mounted elsewhere', async () => {
      // btrfs gives its files an anonymous st_dev (major 0), not its device's number.
      expect(statSync(mnt).dev >> 8).toBe(0);
      for (const dir of [mnt, subMnt]) {
        const error = await origin.snapshot({ cowFile: { path: join(dir, 'inside.cow') } }).catch((e: unknown) => e);
        expect(error).toMatchObject({ code: 'ERR_DMSNAP_COW_IN_ORIGIN' });
        expect(existsSync(join(dir, 'inside.cow'))).toBe(false);
      }
      expect(await origin.snapshots()).toEqual([]);
      expect(records()).toEqual([]);
      expect(invariantViolations()).toEqual([]);
    });
  });

  kernelCells('the default size of a COW file', () => {
    const overwriteAll = (origin: Origin) =>
      run('dd', ['if=/dev/urandom', `of=${origin.devicePath}`, 'bs=1M', `count=${origin.sizeBytes / MiB}`, 'oflag=direct', 'status=none']);

    it('holds a full overwrite of the origin; two chunks fewer do not', async () => {
      const origin = await prepare(createLoopDevice(32 * MiB), { dm, name: `cfsize${process.pid}` });
      try {
        overwriteAll(origin);
        const before = deviceSha(origin.devicePath);
        const snap = await origin.snapshot({ cowFile: { path: join(host, 'full.cow') } });
        overwriteAll(origin);
        const status = await snap.status();
        expect(status.state).toBe('active');
        expect(deviceSha(snap.devicePath)).toBe(before);
        await snap.drop();

        const chunkBytes = snap.info.chunkSectors * 512;
        const short = persistentCowSectors(origin.sizeSectors, snap.info.chunkSectors) * 512 - 2 * chunkBytes;
        const small = await origin.snapshot({ cowFile: { path: join(host, 'short.cow'), sizeBytes: short } });
        overwriteAll(origin);
        expect((await small.status()).state).toBe('invalid');
        await small.drop();
        expectNothingLeft(host);
      } finally {
        await origin.release();
      }
    });
  });

  kernelCells('a preallocated COW file', () => {
    it('has its whole size reserved on its filesystem, and is refused where it does not fit', async () => {
      const origin = await prepare(createLoopDevice(32 * MiB), { dm, name: `cfpre${process.pid}` });
      try {
        const path = join(host, 'reserved.cow');
        const snap = await origin.snapshot({ cowFile: { path, sizeBytes: 24 * MiB, preallocate: true } });
        expect(statSync(path).blocks * 512).toBeGreaterThanOrEqual(24 * MiB);
        expect((await snap.status()).state).toBe('active');
        await snap.drop();
        const error = await origin.snapshot({ cowFile: { path, sizeBytes: 1024 * MiB, preallocate: true } }).catch((e: unknown) => e);
        expect(error).toMatchObject({ code: 'ERR_DMSNAP_COW_FILE_UNSUITABLE' });
        expectNothingLeft(host);
      } finally {
        await origin.release();
      }
    });

    it('is allocated by the addon only through no symlink, and only while it is the inode named', async () => {
      const binding = loadBinding();
      const file = join(host, 'plain');
      writeFileSync(file, '');
      const link = join(host, 'link');
      symlinkSync(file, link);
      try {
        await expect(binding.preallocateFile(link, statSync(file).ino, MiB)).rejects.toMatchObject({ code: 'ELOOP', syscall: 'open' });
        await expect(binding.preallocateFile(file, statSync(file).ino + 1, MiB)).rejects.toMatchObject({ code: 'ESTALE' });
        expect(statSync(file).size).toBe(0);
        await binding.preallocateFile(file, statSync(file).ino, MiB);
        expect(statSync(file).size).toBe(MiB);
        expect(statSync(file).blocks * 512).toBeGreaterThanOrEqual(MiB);
      } finally {
        rmSync(link);
        rmSync(file);
      }
    });
  });

  kernelCells('autoextend and the free-space guard', () => {
    /**
     * Writes `mib` MiB of zeros through the origin, 4 MiB at a time with a pause after each
     * (a steady writer, not a burst faster than the guard samples); asynchronously, so that
     * the guard in this process runs meanwhile.
     */
    const writeOrigin = async (origin: Origin, mib: number, until?: () => Promise<boolean>) => {
      for (let offset = 0; offset < mib && !(await until?.()); offset += 4) {
        const args = ['if=/dev/zero', `of=${origin.devicePath}`, 'bs=1M', 'count=4', `seek=${offset}`, 'oflag=direct', 'conv=notrunc', 'status=none'];
        await new Promise<void>((resolve, reject) => spawn('dd', args, { stdio: 'ignore' }).on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`dd exited ${code}`)))));
        await new Promise((resolve) => setTimeout(resolve, 150));
      }
    };
    /** Fills the origin with one random MiB over and over: content that zeros change. */
    const fillRandom = (origin: Origin) => {
      const block = randomBytes(MiB);
      const fd = openSync(origin.devicePath, 'w');
      for (let i = 0; i < origin.sizeBytes / MiB; i++) writeSync(fd, block, 0, MiB, i * MiB);
      fsyncSync(fd);
      closeSync(fd);
    };
    /** Drops what a failed test left and releases the origin, without hiding the test's own error. */
    const tearDown = async (origin: Origin) => {
      cli(['drop', origin.name, '-q']);
      await origin.release().catch(() => undefined);
    };

    it('keeps a 16 MiB COW file valid through 200 MiB of origin writes by growing it; without autoextend it ends invalid', async () => {
      const origin = await prepare(createLoopDevice(256 * MiB), { dm, name: `cfgrow${process.pid}` });
      try {
        fillRandom(origin);
        const before = deviceSha(origin.devicePath);
        const path = join(host, 'grow.cow');
        const snap = await origin.snapshot({ cowFile: { path, sizeBytes: 16 * MiB } });
        const table = await dm.table(snap.name);
        const stop = new AbortController();
        const grown: number[] = [];
        const guarding = guardCowFile(snap, { autoextend: { thresholdPercent: 70, stepPercent: 100 }, intervalMs: 50, signal: stop.signal, onExtend: (g) => grown.push(g.sizeBytes) });
        await writeOrigin(origin, 200);
        stop.abort();
        await guarding;
        const status = await snap.status();
        expect({ state: status.state, growths: grown.length >= 3 }).toEqual({ state: 'active', growths: true });
        // The kernel sees the file past dmsnap's label (64 KiB), through the COW mapping that grew with it.
        expect(status.totalSectors! * 512).toBe(grown[grown.length - 1] - 65536);
        expect(await dm.table(snap.name)).toEqual(table);
        expect(deviceSha(snap.devicePath)).toBe(before);
        await snap.drop();

        const fixed = await origin.snapshot({ cowFile: { path, sizeBytes: 16 * MiB } });
        // The same writes, stopped once the snapshot is lost (past 16 MiB of changes).
        await writeOrigin(origin, 200, async () => (await fixed.status()).state !== 'active');
        expect((await fixed.status()).state).toBe('invalid');
        await fixed.drop();
        expectNothingLeft(host);
      } finally {
        await tearDown(origin);
      }
    });

    it('stops a backup (exit 3) before the COW file fills its filesystem', async () => {
      // A small filesystem for the COW file, and an origin that writes more than it holds.
      const small = createLoopDevice(48 * MiB);
      run('mkfs.ext4', ['-q', '-F', '-m', '0', small]);
      const smallDir = mkdtempSync(join(scratchDir(), 'cfsmall-'));
      run('mount', [small, smallDir]);
      const origin = await prepare(createLoopDevice(128 * MiB), { dm, name: `cffull${process.pid}` });
      const mnt = mkdtempSync(join(scratchDir(), 'cffullorigin-'));
      run('mkfs.ext4', ['-q', '-F', origin.devicePath]);
      run('mount', [origin.devicePath, mnt]);
      try {
        const script = `for i in $(seq 1 100); do dd if=/dev/zero of=${mnt}/fill$i bs=1M count=1 oflag=direct status=none || exit 9; done; exit 0`;
        const result = cli(['backup', origin.name, '--cow-file', join(smallDir, 'full.cow'), '--min-free', '25', '-q', '--', 'sh', '-c', script]);
        expect({ status: result.status, stderr: result.stderr }).toEqual({
          status: 3,
          stderr: expect.stringMatching(/stopped before the filesystem of the COW file .* filled: .*below the margin of 25%/),
        });
        // Stopped with room to spare, and cleaned up: no snapshot, no file.
        expect(await origin.snapshots()).toEqual([]);
        expectNothingLeft(smallDir);
        expect(invariantViolations()).toEqual([]);
      } finally {
        run('umount', [mnt]);
        await tearDown(origin);
        run('umount', [smallDir]);
      }
    });
  });

  describe('a crash at every step with a COW file', () => {
    // With udev, the steps around the loop device and the freeze.
    // Every step in the primary cell; around the loop device and the freeze in the others.
    const steps = withUdev || cellRole === 'secondary' ? ['attach-cow-file', 'create-snapshot-device', 'resume-origin'] : ['create-cow-file', 'attach-cow-file', ...SNAPSHOT_STEPS];
    let origin: Origin;
    beforeAll(async () => {
      origin = await prepare(createLoopDevice(16 * MiB), { dm, name: `cfcrash${process.pid}` });
    });
    afterAll(async () => {
      cli(['drop', origin.name, '-q']);
      await origin.release();
    });

    it.each(steps)('leaves, after a SIGKILL after %s and a recover, no loop device, file or record', async (step) => {
      const killed = await runCli(['snapshot', origin.name, '--cow-file', join(host, 'crash.cow')], step);
      expect(killed.signal).toBe('SIGKILL');
      expect(cli(['recover', '-q']).status).toBe(0);
      expect(invariantViolations()).toEqual([]);
      // Killed once the snapshot was whole, it is kept: drop then deletes its file.
      if ((await origin.snapshots()).length > 0) expect(cli(['drop', origin.name, '-q']).status).toBe(0);
      expectNothingLeft(host);
    });

    it('leaves nothing after a SIGKILL during drop, once recovered', async () => {
      expect(cli(['snapshot', origin.name, '--cow-file', join(host, 'drop.cow'), '-q']).status).toBe(0);
      const killed = await runCli(['drop', origin.name], 'remove-snapshot');
      expect(killed.signal).toBe('SIGKILL');
      expect(cli(['recover', '-q']).status).toBe(0);
      expect(invariantViolations()).toEqual([]);
      expectNothingLeft(host);
    });
  });
});
