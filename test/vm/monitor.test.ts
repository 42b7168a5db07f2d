/**
 * `dmsnap monitor` on a real kernel, as systemd runs it: it picks up snapshots taken with
 * the CLI after it started, grows a bounded COW file before it fills (the snapshot stays
 * active with no table reload), drops a snapshot before its COW file fills the
 * filesystem that holds it (--on-full drop), writes metrics, and exits 0 on SIGTERM.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { DeviceMapper, openOrigin, prepare } from '../../lib';
import { invariantViolations } from './support/invariants';
import { cli, createLoopDevice, run, scratchDir } from './support/system';

const MiB = 1024 * 1024;

async function until(what: () => boolean | Promise<boolean>, ms: number, label: () => string): Promise<void> {
  for (const start = Date.now(); !(await what()); ) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${label()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function writeMiB(device: string, mib: number, from = 0): void {
  for (let offset = from; offset < from + mib; offset += 4) {
    run('dd', ['if=/dev/zero', `of=${device}`, 'bs=1M', 'count=4', `seek=${offset}`, 'oflag=direct', 'conv=notrunc', 'status=none']);
    // A steady writer: the monitor samples every 0.2 s.
    spawnSync('sleep', ['0.4']);
  }
}

describe('dmsnap monitor', () => {
  let dm: DeviceMapper;
  const mounts: string[] = [];
  const mountExt4 = (sizeBytes: number) => {
    const disk = createLoopDevice(sizeBytes);
    run('mkfs.ext4', ['-q', '-F', '-m', '0', disk]);
    const dir = mkdtempSync(join(scratchDir(), 'monfs-'));
    run('mount', [disk, dir]);
    mounts.push(dir);
    return dir;
  };

  beforeAll(async () => {
    dm = await DeviceMapper.open();
  });
  afterAll(() => {
    for (const dir of mounts) run('umount', [dir]);
    dm.close();
  });

  it('grows one COW file, drops a snapshot whose COW file would fill its filesystem, writes metrics, and stops on SIGTERM', async () => {
    const big = mountExt4(256 * MiB);
    const small = mountExt4(48 * MiB);
    const metrics = join(big, 'dmsnap.prom');
    const growing = await prepare(createLoopDevice(128 * MiB), { dm, name: `mongrow${process.pid}` });
    const filling = await prepare(createLoopDevice(128 * MiB), { dm, name: `monfill${process.pid}` });
    const child = spawn(
      process.execPath,
      [join(process.cwd(), 'dist/dmsnap.js'), 'monitor', '--autoextend', '70:100', '--on-full', 'drop', '--min-free', '25', '--metrics', metrics, '--interval', '0.2'],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, JOURNAL_STREAM: '8:1234' } },
    );
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await until(() => existsSync(metrics), 60_000, () => `the first metrics; monitor's stderr: ${stderr}`);
      // Taken after the monitor started: it must pick them up.
      // On a failure, the message says why.
      const taken = [cli(['snapshot', growing.name, '--cow-file', join(big, 'grow.cow'), '--cow-size', '16M', '-q']), cli(['snapshot', filling.name, '--cow-file', join(small, 'fill.cow'), '-q'])];
      expect(taken.map((r) => (r.status === 0 ? 0 : `${r.status}: ${r.stderr}`))).toEqual([0, 0]);
      const [snap] = await growing.snapshots();
      const table = await dm.table(snap.name);
      writeMiB(growing.devicePath, 48);
      await until(() => /grew the COW file/.test(stderr), 60_000, () => `a growth; monitor's stderr: ${stderr}`);
      expect((await snap.status()).state).toBe('active');
      expect(await dm.table(snap.name)).toEqual(table);

      writeMiB(filling.devicePath, 40);
      await until(async () => (await (await openOrigin(filling.name, { dm })).snapshots()).length === 0, 60_000, () => `the drop; monitor's stderr: ${stderr}`);
      expect(readdirSync(small).filter((f) => f !== 'lost+found')).toEqual([]);
      expect(stderr).toMatch(/^<3>dmsnap monitor: the filesystem of the COW file .*fill\.cow .* below the margin; dropped the snapshot/m);
      await until(() => readFileSync(metrics, 'utf8').includes(`snapshot="${snap.name}",state="active"} 1`), 30_000, () => `metrics of the snapshot; monitor's stderr: ${stderr}`);
      expect(readFileSync(metrics, 'utf8')).toMatch(new RegExp(`dmsnap_snapshot_cow_used_ratio\\{origin="${growing.name}",snapshot="${snap.name}"\\} 0\\.\\d+`));
    } finally {
      child.kill('SIGTERM');
      const code = await exited;
      cli(['drop', growing.name, '-q']);
      cli(['drop', filling.name, '-q']);
      await growing.release();
      await filling.release();
      rmSync(metrics, { force: true });
      expect({ code, stderr }).toEqual({ code: 0, stderr: expect.any(String) });
    }
    expect(invariantViolations()).toEqual([]);
    expect(readdirSync(big).filter((f) => f !== 'lost+found')).toEqual([]);
  });
});
