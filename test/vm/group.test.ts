/**
 * Group snapshots on the kernel: two XFS filesystems on two origins, and a writer that
 * appends record n to a log on the first, then to a log on the second, in lockstep. Every
 * group snapshot must hold a state that existed at one instant: records(second) ≤
 * records(first) ≤ records(second) + 1. Separate snapshots taken back to back are
 * measured against the same condition, to show what the group is for. Then SIGKILL inside
 * the freeze of a group: every origin's guardian resumes it.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { DeviceMapper, openOrigin, prepare, snapshotGroup, type Origin, type Snapshot } from '../../lib';
import { checkLog } from './support/writer';
import { cellRole, cli, createLoopDevice, dmsetup, run } from './support/system';

const MiB = 1024 * 1024;
const CLI = join(process.cwd(), 'dist/dmsnap.js');
const primary = cellRole === 'primary';
const GROUPS = primary ? 20 : 5;
const SEPARATE = primary ? 5 : 2;

describe('group snapshots of two XFS filesystems under a lockstep writer', () => {
  const names = [`grpa${process.pid}`, `grpb${process.pid}`];
  const dirs: string[] = [];
  const cows: string[] = [];
  let origins: Origin[];
  let dm: DeviceMapper;
  let writer: ChildProcess;

  beforeAll(async () => {
    dm = await DeviceMapper.open();
    origins = [];
    for (const name of names) {
      const origin = await prepare(createLoopDevice(320 * MiB), { dm, name });
      run('mkfs.xfs', ['-q', origin.devicePath]);
      const dir = mkdtempSync(`/tmp/dmsnap-${name}-`);
      run('mount', [origin.devicePath, dir]);
      origins.push(origin);
      dirs.push(dir);
      cows.push(createLoopDevice(64 * MiB));
    }
    writer = spawn(process.execPath, [join(__dirname, 'support/lockstep.js'), join(dirs[0], 'log'), join(dirs[1], 'log')], { stdio: ['ignore', 'pipe', 'inherit'] });
  });

  afterAll(async () => {
    if (writer.exitCode === null) {
      const exited = new Promise((resolve) => writer.on('exit', resolve));
      writer.kill('SIGTERM');
      await exited;
    }
    for (const [i, name] of names.entries()) {
      run('umount', [dirs[i]]);
      rmdirSync(dirs[i]);
      cli(['recover', '-q']);
      cli(['drop', name, '-q']);
      run('xfs_repair', ['-n', `/dev/mapper/${name}`]);
      await (await openOrigin(name, { dm })).release();
    }
    dm.close();
  });

  /** How many records each snapshot's log holds (mounted read-only, checked whole), then the snapshots dropped. */
  async function recordsIn(snaps: Snapshot[]): Promise<number[]> {
    const counts: number[] = [];
    for (const snap of snaps) {
      const dir = mkdtempSync('/tmp/dmsnap-grp-snap-');
      await snap.mount(dir);
      try {
        counts.push(checkLog(readFileSync(join(dir, 'log'))));
      } finally {
        await snap.unmount();
        rmdirSync(dir);
      }
    }
    for (const snap of snaps) await snap.drop();
    return counts;
  }

  const oneInstant = ([first, second]: number[]) => second <= first && first <= second + 1;

  it(`holds one instant in each of ${GROUPS} group snapshots; separate snapshots back to back are measured against it`, async () => {
    const seen: number[][] = [];
    for (let i = 0; i < GROUPS; i++) {
      const snaps = await snapshotGroup(origins.map((origin, j) => ({ origin, cow: cows[j] })));
      expect(snaps.map((s) => s.freezeMs)).toEqual([snaps[0].freezeMs, snaps[0].freezeMs]);
      const counts = await recordsIn(snaps);
      seen.push(counts);
      if (!oneInstant(counts)) throw new Error(`group snapshot ${i} holds ${counts[0]} records on the first filesystem and ${counts[1]} on the second: not one instant`);
    }
    // The writer ran all along: the snapshots saw its log grow.
    expect(seen[seen.length - 1][0]).toBeGreaterThan(seen[0][0]);

    let broken = 0;
    for (let i = 0; i < SEPARATE; i++) {
      const snaps = [await origins[0].snapshot({ cow: cows[0] }), await origins[1].snapshot({ cow: cows[1] })];
      const counts = await recordsIn(snaps);
      if (!oneInstant(counts)) broken++;
    }
    process.stderr.write(`group snapshots: ${GROUPS} of ${GROUPS} at one instant; separate snapshots back to back: ${broken} of ${SEPARATE} not at one instant\n`);
  });

  const seam = (step: string, origin: string) => ({ ...process.env, DMSNAP_TEST_SEAMS: '1', DMSNAP_TEST_KILL_AFTER: step, DMSNAP_TEST_SEAM_ORIGIN: origin });
  const killSteps: [string, number][] = primary ? [['suspend-origin', 1], ['resume-snapshot', 0]] : [['suspend-origin', 1]];

  it.each(killSteps)('repairs a SIGKILL inside the freeze, right after "%s" of origin %d: every origin resumed on its previous table', async (step, member) => {
    const sorted = [...names].sort();
    const writes = () => readFileSync(join(dirs[0], 'log')).length;
    const result = spawnSync(process.execPath, [CLI, 'snapshot', ...names, '--cow', cows[0], '--cow', cows[1], '--no-hooks'], { env: seam(step, sorted[member]), encoding: 'utf8' });
    expect(result.signal).toBe('SIGKILL');
    // Every origin takes writes again at once: the writer goes on, on both.
    const before = writes();
    for (const dir of dirs) {
      const dd = spawnSync('dd', ['if=/dev/zero', `of=${join(dir, `after-${step}`)}`, 'bs=4096', 'count=1', 'conv=fsync', 'status=none'], { timeout: 1000 });
      expect(dd.status).toBe(0);
    }
    cli(['recover', '-q']);
    for (const name of names) {
      expect(dmsetup('info', '-c', '--noheadings', '-o', 'attr', name).trim()).toMatch(/^L-/);
      expect(dmsetup('table', name)).toBe(dmsetup('table', `${name}-real`));
      expect(dmsetup('ls').split('\n').filter((line) => line.startsWith(`${name}-`)).map((line) => line.split('\t')[0])).toEqual([`${name}-real`]);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(writes()).toBeGreaterThan(before);
    // The next group snapshot works.
    expect(oneInstant(await recordsIn(await snapshotGroup(origins.map((origin, j) => ({ origin, cow: cows[j] })))))).toBe(true);
  });
});
