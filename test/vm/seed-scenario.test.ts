/**
 * The seed procedure end to end on a real kernel: md RAID1 of two loop devices, a
 * filesystem on the dmsnap wrapper, a COW on a third loop device, a writer that never
 * stops, and three snapshot cycles, each checked against a checksum manifest, a
 * filesystem checker and dmsetup.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DeviceMapper, listOrigins, prepare, type Origin } from '../../lib';
import { createLoopDevice, dmsetup, run } from './support/system';
import { checkLog } from './support/writer';

const MiB = 1024 * 1024;

function manifest(root: string, skip: string): Map<string, string> {
  const sums = new Map<string, string>();
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (path === skip || entry.name === 'lost+found') continue;
      if (entry.isDirectory()) walk(path);
      else sums.set(relative(root, path), createHash('sha256').update(readFileSync(path)).digest('hex'));
    }
  };
  walk(root);
  return sums;
}

function writeDataset(root: string, cycle: number): void {
  for (let d = 0; d < 4; d++) {
    const dir = join(root, `dir${d}`);
    mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 8; f++) writeFileSync(join(dir, `file${f}.bin`), randomBytes(16 * 1024 * (1 + ((f + cycle) % 8))));
  }
  run('sync', []);
}

/** Changes the live filesystem after a snapshot: the snapshot must not see any of it. */
function churn(root: string): void {
  for (let d = 0; d < 4; d++) {
    writeFileSync(join(root, `dir${d}`, 'file0.bin'), randomBytes(64 * 1024));
    unlinkSync(join(root, `dir${d}`, 'file1.bin'));
    writeFileSync(join(root, `dir${d}`, `new-${Date.now()}.bin`), randomBytes(8 * 1024));
  }
  run('sync', []);
}

async function stopWriter(writer: ChildProcess): Promise<number> {
  let out = '';
  writer.stdout!.on('data', (d) => (out += d));
  const exited = new Promise<void>((resolve) => (writer.exitCode !== null ? resolve() : writer.on('exit', () => resolve())));
  writer.kill('SIGTERM');
  await exited;
  return Number(out.trim());
}

const fsChecks = {
  xfs: { mkfs: ['mkfs.xfs', '-q', '-f'], check: (dev: string) => run('xfs_repair', ['-n', dev]) },
  ext4: { mkfs: ['mkfs.ext4', '-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0'], check: (dev: string) => run('e2fsck', ['-fn', dev]) },
};

describe.each(['xfs', 'ext4'] as const)('the seed scenario on %s', (fsType) => {
  const name = `seed${fsType}${process.pid}`;
  const md = fsType === 'xfs' ? '/dev/md100' : '/dev/md101';
  let dm: DeviceMapper;
  let origin: Origin;
  let mountDir: string;
  let writer: ChildProcess;
  let cow: string;

  beforeAll(async () => {
    dm = await DeviceMapper.open();
    const a = createLoopDevice(320 * MiB);
    const b = createLoopDevice(320 * MiB);
    cow = createLoopDevice(64 * MiB);
    run('mdadm', ['--create', md, '--metadata=0.90', '--level=1', '--raid-devices=2', '--assume-clean', '--run', '--quiet', a, b]);
    origin = await prepare(md, { dm, name });
    const [program, ...args] = fsChecks[fsType].mkfs;
    run(program, [...args, origin.devicePath]);
    mountDir = mkdtempSync('/tmp/dmsnap-origin-');
    run('mount', [origin.devicePath, mountDir]);
    mkdirSync(join(mountDir, 'writer'));
    writer = spawn(process.execPath, [join(__dirname, 'support/writer.js'), join(mountDir, 'writer', 'log')], { stdio: ['ignore', 'pipe', 'inherit'] });
    // Node starts slowly under emulation: wait until the writer is writing.
    for (let i = 0; i < 600 && !(existsSync(join(mountDir, 'writer', 'log')) && statSync(join(mountDir, 'writer', 'log')).size > 0); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  afterAll(async () => {
    if (writer && writer.exitCode === null) await stopWriter(writer);
    if (mountDir) {
      run('umount', [mountDir]);
      rmSync(mountDir, { recursive: true, force: true });
    }
    if (origin) await origin.release();
    run('mdadm', ['--stop', md]);
    dm.close();
  });

  it('takes three consistent snapshots while a writer keeps writing', async () => {
    const linearTable = await dm.table(name);
    const freezes: number[] = [];
    for (let cycle = 0; cycle < 3; cycle++) {
      writeDataset(mountDir, cycle);
      const expected = manifest(mountDir, join(mountDir, 'writer'));
      const recordsBefore = readFileSync(join(mountDir, 'writer', 'log')).length / 4096;

      const snap = await origin.snapshot({ cow });
      try {
      freezes.push(snap.freezeMs!);
      churn(mountDir);

      // Status as dmsetup reads it, with the writer paused. The filesystem's own threads
      // (journal commits) may still write: compare when the status held still around
      // dmsetup's reading.
      writer.kill('SIGSTOP');
      let status = await snap.status();
      let theirs = '';
      for (let attempt = 0; attempt < 10; attempt++) {
        run('sync', []);
        const before = await snap.status();
        theirs = dmsetup('status', snap.name).trim();
        status = await snap.status();
        if (before.allocatedSectors === status.allocatedSectors) break;
      }
      writer.kill('SIGCONT');
      expect(status.state).toBe('active');
      expect(theirs).toBe(`0 ${origin.sizeSectors} snapshot ${status.allocatedSectors}/${status.totalSectors} ${status.metadataSectors}`);

      const snapDir = mkdtempSync('/tmp/dmsnap-snap-');
      const mounted = await snap.mount(snapDir);
      expect(mounted.fsType).toBe(fsType);
      try {
        expect(manifest(snapDir, join(snapDir, 'writer'))).toEqual(expected);
        const records = checkLog(readFileSync(join(snapDir, 'writer', 'log')));
        expect(records).toBeGreaterThanOrEqual(recordsBefore);
        expect(run('findmnt', ['-no', 'OPTIONS', snapDir])).toMatch(/^ro,/);
      } finally {
        await snap.unmount();
        rmSync(snapDir, { recursive: true, force: true });
      }
      fsChecks[fsType].check(snap.devicePath);
      } finally {
        await snap.drop();
      }
      expect(await dm.table(name)).toEqual(linearTable);
      const ours = (await listOrigins({ dm })).find((o) => o.name === name)!;
      expect(await ours.snapshots()).toEqual([]);
      expect((await dm.list()).filter((d) => d.name.startsWith(name)).map((d) => d.name).sort()).toEqual([name, `${name}-real`]);
    }
    const written = await stopWriter(writer);
    expect(written).toBeGreaterThan(0);
    expect(checkLog(readFileSync(join(mountDir, 'writer', 'log')))).toBe(written);
    console.log(`${fsType}: freeze per snapshot (ms): ${freezes.map((ms) => ms.toFixed(1)).join(', ')}`);
    expect(statSync(join(mountDir, 'writer', 'log')).size).toBe(written * 4096);
  });

  it('leaves the origin live, writable and unchanged when the COW fails under the kernel', async () => {
    const linearTable = await dm.table(name);
    // A COW that reads fine but fails every write (dm-flakey, always down, error_writes).
    const backing = createLoopDevice(8 * MiB);
    const broken = `${name}-brokencow`;
    await dm.create(broken, { table: `0 ${8 * 2048} flakey ${backing} 0 0 1 1 error_writes` });
    try {
      const before = (await dm.list()).map((d) => d.name).sort();
      const error = await origin.snapshot({ cow: dm.devicePath(broken) }).catch((e: unknown) => e);
      expect((error as Error).message).toMatch(/failed at step "zero-cow"/);
      expect((error as { code?: string }).code).toBe('EIO');
      expect((await dm.list()).map((d) => d.name).sort()).toEqual(before);
      expect(await dm.table(name)).toEqual(linearTable);
      expect((await dm.info(name)).suspended).toBe(false);
      writeFileSync(join(mountDir, 'after-failure'), 'still writable');
      run('sync', []);
    } finally {
      await dm.remove(broken);
    }
  });
});
