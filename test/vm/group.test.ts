/**
 * Group snapshots on the kernel: two XFS filesystems on two origins, and a writer that
 * writes record n to a log on the first, then to a log on the second, in lockstep
 * (support/lockstep.ts). Every group snapshot must hold a state that existed at one
 * instant: records(second) ≤ records(first) ≤ records(second) + 1. Separate snapshots
 * taken back to back are measured against the same condition, to show what the group is
 * for. The logs are read from each snapshot device at the extents XFS gave them (read once
 * through a mount too, to prove the two agree), so that 20 groups cost no mounts. Then the
 * hooks, and SIGKILL inside the freeze of a group: every origin's guardian resumes it.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DeviceMapper, openOrigin, prepare, snapshotGroup, type Origin, type Snapshot } from '../../lib';
import { checkLog, RECORD_BYTES } from './support/writer';
import { cellRole, cli, createLoopDevice, dmsetup, run } from './support/system';

const MiB = 1024 * 1024;
const CLI = join(process.cwd(), 'dist/dmsnap.js');
const primary = cellRole === 'primary';
const GROUPS = primary ? 20 : 5;
const SEPARATE = primary ? 5 : 2;
const SLOTS = 64;

/** The extents of a file, in 512-byte sectors of its device: [file offset, device offset, length]. */
function extentsOf(file: string): [number, number, number][] {
  const extents: [number, number, number][] = [];
  for (const line of run('xfs_bmap', [file]).split('\n')) {
    const match = /^\s*\d+: \[(\d+)\.\.(\d+)\]: (\d+)\.\.(\d+)$/.exec(line);
    if (match) extents.push([Number(match[1]), Number(match[3]), Number(match[2]) - Number(match[1]) + 1]);
  }
  return extents;
}

/** The bytes of a file as a block device holds them, read at its extents. */
function readExtents(device: string, extents: [number, number, number][]): Buffer {
  const content = Buffer.alloc(SLOTS * RECORD_BYTES);
  const fd = openSync(device, 'r');
  try {
    for (const [at, from, length] of extents) readSync(fd, content, at * 512, Math.min(length * 512, content.length - at * 512), from * 512);
  } finally {
    closeSync(fd);
  }
  return content;
}

describe('group snapshots of two XFS filesystems under a lockstep writer', () => {
  const names = [`grpa${process.pid}`, `grpb${process.pid}`];
  const dirs: string[] = [];
  const cows: string[] = [];
  let origins: Origin[];
  let dm: DeviceMapper;
  let writer: ChildProcess;
  let extents: [number, number, number][][];

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
    writer = spawn(process.execPath, [join(__dirname, 'support/lockstep.js'), join(dirs[0], 'log'), join(dirs[1], 'log'), String(SLOTS)], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      writer.stdout!.once('data', () => resolve());
      writer.once('exit', (code) => reject(new Error(`the lockstep writer exited (${code})`)));
    });
    extents = dirs.map((dir) => extentsOf(join(dir, 'log')));
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

  /** How many records each snapshot's log holds (read at the log's extents, checked whole), then the snapshots dropped. */
  async function recordsIn(snaps: Snapshot[]): Promise<number[]> {
    const counts = snaps.map((snap, i) => checkLog(readExtents(snap.devicePath, extents[i]), SLOTS));
    for (const snap of snaps) await snap.drop();
    return counts;
  }

  const oneInstant = ([first, second]: number[]) => second <= first && first <= second + 1;

  it(`holds one instant in each of ${GROUPS} group snapshots; separate snapshots back to back are measured against it`, async () => {
    const seen: number[][] = [];
    for (let i = 0; i < GROUPS; i++) {
      const snaps = await snapshotGroup(origins.map((origin, j) => ({ origin, cow: cows[j] })));
      expect(snaps.map((s) => s.freezeMs)).toEqual([snaps[0].freezeMs, snaps[0].freezeMs]);
      if (i === 0) {
        // The log read at its extents is the log the snapshot's filesystem holds.
        for (const [j, snap] of snaps.entries()) {
          const dir = mkdtempSync('/tmp/dmsnap-grp-snap-');
          await snap.mount(dir);
          try {
            expect(readFileSync(join(dir, 'log')).equals(readExtents(snap.devicePath, extents[j]))).toBe(true);
          } finally {
            await snap.unmount();
            rmdirSync(dir);
          }
        }
      }
      const counts = await recordsIn(snaps);
      seen.push(counts);
      if (!oneInstant(counts)) throw new Error(`group snapshot ${i} holds ${counts[0]} records on the first filesystem and ${counts[1]} on the second: not one instant`);
    }
    // The writer ran all along: the snapshots saw its log grow; and the log's blocks never moved.
    expect(seen[seen.length - 1][0]).toBeGreaterThan(seen[0][0]);
    expect(dirs.map((dir) => extentsOf(join(dir, 'log')))).toEqual(extents);

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
    const writes = () => checkLog(readFileSync(join(dirs[0], 'log')), SLOTS);
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
  it('runs the hooks around the freeze: pre-freeze with every origin live and untouched, post-thaw with every snapshot in place; a hanging hook is killed at its time limit', () => {
    const log = join(mkdtempSync('/tmp/dmsnap-grp-hooks-'), 'log');
    const state = () => names.map((name) => `${dmsetup('info', '-c', '--noheadings', '-o', 'suspended', name).trim()} ${dmsetup('table', name).split(' ')[2]}`).join(', ');
    const before = state();
    const probe = (phase: string) => `echo "${phase} $(for n in ${names.join(' ')}; do printf '%s ' "$(dmsetup info -c --noheadings -o suspended $n) $(dmsetup table $n | cut -d' ' -f3)"; done)" >> ${log}`;
    const taken = cli(['snapshot', ...names, '--cow', cows[0], '--cow', cows[1], '--no-hooks', '--pre-freeze', probe('pre'), '--post-thaw', probe('post')]);
    expect(taken).toMatchObject({ status: 0, stdout: names.map((n) => `/dev/mapper/${n}-snap`).join('\n') + '\n' });
    const lines = readFileSync(log, 'utf8').trim().split('\n').map((line) => line.trimEnd());
    expect(lines[0]).toBe(`pre ${names.map(() => 'Active linear').join(' ')}`);
    expect(lines[1]).toBe(`post ${names.map(() => 'Active snapshot-origin').join(' ')}`);
    expect(cli(['drop', names[0], '-q']).status).toBe(0);
    expect(cli(['drop', names[1], '-q']).status).toBe(0);

    // SIGINT to dmsnap during the pre-freeze hook: the snapshot and the post-thaw hook
    // finish, then the snapshots are dropped and dmsnap exits 130.
    const interrupted = cli(['snapshot', ...names, '--cow', cows[0], '--cow', cows[1], '--no-hooks', '--pre-freeze', 'kill -INT $PPID', '--post-thaw', `echo thawed > ${log}`]);
    expect(interrupted).toMatchObject({ status: 130, stdout: '', stderr: expect.stringMatching(/stopped by SIGINT; the snapshots it took were dropped/) });
    expect(readFileSync(log, 'utf8')).toBe('thawed\n');
    expect(state()).toBe(before);

    // A pre-freeze hook that hangs: killed at its time limit, the snapshot refused, nothing changed.
    const started = Date.now();
    const hung = cli(['snapshot', ...names, '--cow', cows[0], '--cow', cows[1], '--no-hooks', '--hook-timeout', '1', '--pre-freeze', `echo $$ > ${log}.pid; exec sleep 60`]);
    expect(hung).toMatchObject({ status: 1, stdout: '', stderr: expect.stringMatching(/timed out after 1 s/) });
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(() => process.kill(Number(readFileSync(`${log}.pid`, 'utf8')), 0)).toThrow();
    expect(state()).toBe(before);
  });
  it('backs up a group: each snapshot mounted on MOUNTDIR/NAME for one COMMAND; and images a group, one output each', () => {
    const out = mkdtempSync('/tmp/dmsnap-grp-out-');
    const script = `for n in $DMSNAP_ORIGINS; do wc -c < "$n/log"; done > ${out}/sizes; pwd > ${out}/cwd`;
    const backup = cli(['backup', ...names, '--cow', cows[0], '--cow', cows[1], '--no-hooks', '-q', '--', 'sh', '-c', script]);
    expect(backup).toMatchObject({ status: 0, stderr: '' });
    expect(readFileSync(join(out, 'sizes'), 'utf8')).toBe(`${SLOTS * RECORD_BYTES}\n${SLOTS * RECORD_BYTES}\n`);
    for (const name of names) expect(dmsetup('ls').includes(`${name}-snap`)).toBe(false);
    const images = names.map((name) => join(out, `${name}.img`));
    const image = cli(['image', ...names, '--cow', cows[0], '--cow', cows[1], '--no-hooks', '-q', ...images.flatMap((file) => ['--output', file])]);
    expect(image).toMatchObject({ status: 0, stderr: '' });
    // Each image is its origin's XFS, whole, and the pair holds one instant.
    for (const [i, file] of images.entries()) {
      expect(statSync(file).size).toBe(origins[i].sizeBytes);
      const magic = Buffer.alloc(4);
      const fd = openSync(file, 'r');
      readSync(fd, magic, 0, 4, 0);
      closeSync(fd);
      expect(magic.toString('latin1')).toBe('XFSB');
    }
    expect(oneInstant(images.map((file, i) => checkLog(readExtents(file, extents[i]), SLOTS)))).toBe(true);
    run('rm', ['-rf', out]);
  });
});
