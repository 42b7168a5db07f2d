/**
 * Rollback against a real kernel: a snapshot merged back into its origin with
 * snapshot-merge. What is checked is what the kernel did: the origin's bytes equal the
 * snapshot's at its freeze, the filesystem checks clean, another snapshot stays valid
 * through the merge, and a process killed after any step leaves no device suspended and
 * a state that recover (or the next rollback) brings to the same end.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { invariantViolations } from './support/invariants';
import { deviceSha, runCli } from './support/model';
import { cellRole, cli, createLoopDevice, dmsetup, run, scratchDir, withUdev } from './support/system';

const MiB = 1024 * 1024;
let counter = 0;
const fresh = () => `rb${process.pid}x${counter++}`;

function table(name: string): string {
  return dmsetup('table', name).trim();
}

function exists(name: string): boolean {
  return run('dmsetup', ['info', '-c', '--noheadings', '-o', 'name']).split('\n').some((l) => l.trim() === name);
}

/** The dmsnap devices of `name` that are suspended now (dmsetup's attr: L, I, s, …). */
function suspendedOf(name: string): string[] {
  return dmsetup('info', '-c', '--noheadings', '--separator', ' ', '-o', 'name,attr')
    .split('\n')
    .map((l) => l.trim().split(' '))
    .filter(([device, attr]) => device?.startsWith(name) && attr?.[2] === 's')
    .map(([device]) => device);
}

async function until(done: () => boolean, ms: number): Promise<void> {
  for (let waited = 0; !done() && waited < ms; waited += 100) await new Promise((resolve) => setTimeout(resolve, 100));
}

// A COW behind dm-delay: every I/O to it waits DELAY_MS, so a merge of scattered chunks
// (one batch and one metadata commit each) lasts long enough for a test to act while it
// runs; reloaded with no delay, the merge then ends at the kernel's own speed.
const DELAY_MS = 100;
const delayed: string[] = [];
function delayedDevice(backing: string, name: string): string {
  const size = run('blockdev', ['--getsz', backing]).trim();
  run('dmsetup', ['create', name, '--table', `0 ${size} delay ${backing} 0 ${DELAY_MS}`]);
  delayed.push(name);
  // Without udev, dmsetup leaves the /dev/mapper node to be made.
  run('dmsetup', ['mknodes', name]);
  return `/dev/mapper/${name}`;
}
function undelay(name: string, backing: string): void {
  const size = run('blockdev', ['--getsz', backing]).trim();
  run('dmsetup', ['suspend', name]);
  run('dmsetup', ['load', name, '--table', `0 ${size} delay ${backing} 0 0`]);
  run('dmsetup', ['resume', name]);
}

/** Writes 4 KiB of random data at the start of every other 32 KiB from `offsetMiB` on: chunks that merge one by one. */
function writeScattered(device: string, offsetMiB: number, count: number): void {
  const fd = openSync(device, 'r+');
  try {
    for (let i = 0; i < count; i++) writeSync(fd, randomBytes(4096), 0, 4096, offsetMiB * MiB + i * 64 * 1024);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function writeRandom(device: string, offsetMiB: number, countMiB: number): void {
  run('dd', ['if=/dev/urandom', `of=${device}`, 'bs=1M', `seek=${offsetMiB}`, `count=${countMiB}`, 'oflag=direct', 'conv=notrunc', 'status=none']);
}

function status(name: string) {
  const result = cli(['status', name, '--json']);
  expect(result.stderr).toBe('');
  const parsed = JSON.parse(result.stdout) as { origins: { snapshots: { name: string; state: string }[] }[] };
  return parsed.origins[0].snapshots.map((s) => `${s.name}:${s.state}`);
}

afterEach(() => {
  const ls = JSON.parse(cli(['ls', '--json']).stdout || '{"origins":[]}');
  for (const origin of ls.origins) {
    if (/ snapshot-merge /.test(table(origin.name))) cli(['rollback', origin.name, '--wait']);
    for (const snap of origin.snapshots) spawnSync('umount', ['-l', snap.device]);
    spawnSync('umount', ['-l', origin.device]);
    cli(['drop', origin.name]);
    cli(['release', origin.name]);
  }
  for (const name of delayed.splice(0)) spawnSync('dmsetup', ['remove', '--retry', name]);
});

describe('dmsnap rollback of a filesystem', () => {
  // In the primary cell and the cells with udev (6.1 and 6.12); 5.10 and 6.12 without udev
  // roll back ext4 below.
  const xfsCell = cellRole === 'primary' || withUdev ? it : it.skip;

  xfsCell('rolls XFS back to its snapshot byte for byte while a second snapshot stays valid, then to that one (a COW file); refuses a mounted origin', () => {
    const disk = createLoopDevice(320 * MiB);
    const name = fresh();
    const origin = `/dev/mapper/${name}`;
    expect(cli(['prepare', disk, '--name', name]).status).toBe(0);
    run('mkfs.xfs', ['-q', '-f', origin]);
    const dir = mkdtempSync(join(scratchDir(), 'mnt-'));
    run('mount', [origin, dir]);
    for (let i = 0; i < 12; i++) writeFileSync(join(dir, `file-${i}`), randomBytes(512 * 1024));
    run('sync', []);
    const first = createLoopDevice(48 * MiB);
    expect(cli(['snapshot', name, '--cow', first, '--snapshot-name', `${name}-a`, '-q']).status).toBe(0);
    const atA = deviceSha(`/dev/mapper/${name}-a`);
    const fileAtA = readFileSync(join(dir, 'file-3'));

    // Files deleted, rewritten and added; then a second snapshot, and more changes.
    for (let i = 0; i < 4; i++) rmSync(join(dir, `file-${i}`));
    for (let i = 4; i < 8; i++) writeFileSync(join(dir, `file-${i}`), randomBytes(768 * 1024));
    for (let i = 0; i < 6; i++) writeFileSync(join(dir, `new-${i}`), randomBytes(1024 * 1024));
    run('sync', []);
    expect(cli(['snapshot', name, '--cow-file', join(scratchDir(), `${name}-b.cow`), '--snapshot-name', `${name}-b`, '-q']).status).toBe(0);
    const atB = deviceSha(`/dev/mapper/${name}-b`);
    for (let i = 0; i < 4; i++) writeFileSync(join(dir, `later-${i}`), randomBytes(1024 * 1024));
    run('sync', []);

    // Mounted: exit 4, nothing changed.
    const before = `${table(name)}|${table(`${name}-a`)}`;
    const refused = cli(['rollback', name, '--snapshot-name', `${name}-a`]);
    expect(refused.status).toBe(4);
    expect(refused.stderr).toMatch(/mounted or held.*unmount it/);
    expect(`${table(name)}|${table(`${name}-a`)}`).toBe(before);
    expect(status(name)).toEqual([`${name}-a:active`, `${name}-b:active`]);

    run('umount', [dir]);
    const rolled = cli(['rollback', name, '--snapshot-name', `${name}-a`, '--wait', '-q']);
    expect(rolled).toMatchObject({ status: 0, stdout: '', stderr: '' });
    expect(exists(`${name}-a`)).toBe(false);
    expect(table(name)).toMatch(/ snapshot-origin /);
    expect(deviceSha(origin)).toBe(atA);
    // The second snapshot was fed through the merge: still its own freeze.
    expect(status(name)).toEqual([`${name}-b:active`]);
    expect(deviceSha(`/dev/mapper/${name}-b`)).toBe(atB);
    expect(invariantViolations()).toEqual([]);
    // A snapshot of a mounted XFS has a log to replay, as after a crash: mounting replays it.
    run('mount', [origin, dir]);
    try {
      expect(readFileSync(join(dir, 'file-3')).equals(fileAtA)).toBe(true);
      expect(run('ls', [dir]).split('\n').filter((f) => /^(new|later)-/.test(f))).toEqual([]);
    } finally {
      run('umount', [dir]);
    }
    run('xfs_repair', ['-n', origin]);

    // Then back to the second snapshot, whose COW is a file: the file and its loop device go with it.
    const cowFile = join(scratchDir(), `${name}-b.cow`);
    expect(cli(['rollback', name, '--wait', '-q'])).toMatchObject({ status: 0, stdout: '', stderr: '' });
    expect(deviceSha(origin)).toBe(atB);
    expect(table(name)).toBe(table(`${name}-real`));
    expect(existsSync(cowFile)).toBe(false);
    expect(run('losetup', ['-a'])).not.toContain(cowFile);
    expect(invariantViolations()).toEqual([]);
  });

  const kernelCell = withUdev ? it.skip : it;

  kernelCell('reads as the snapshot at once without --wait; a --wait killed with SIGKILL leaves the kernel merging; the next command finishes it', async () => {
    const disk = createLoopDevice(64 * MiB);
    const name = fresh();
    const origin = `/dev/mapper/${name}`;
    expect(cli(['prepare', disk, '--name', name]).status).toBe(0);
    run('mkfs.ext4', ['-q', '-F', origin]);
    const backing = createLoopDevice(48 * MiB);
    const cow = delayedDevice(backing, `${name}-slow`);
    expect(cli(['snapshot', name, '--cow', cow, '--chunk-size', '32k', '-q'])).toMatchObject({ status: 0, stderr: '' });
    const atSnapshot = deviceSha(`/dev/mapper/${name}-snap`);
    writeScattered(origin, 4, 400);

    const started = cli(['rollback', name]);
    expect(started.status).toBe(0);
    expect(started.stderr).toMatch(/reads as .* now; the kernel merges it back in the background/);
    // While it merges: no new snapshot, no drop of the one being merged (exit 4, busy).
    expect(cli(['snapshot', name, '--cow', createLoopDevice(8 * MiB), '--snapshot-name', `${name}-x`])).toMatchObject({ status: 4 });
    expect(cli(['drop', name, '--snapshot-name', `${name}-snap`])).toMatchObject({ status: 4 });
    expect(status(name)).toEqual([`${name}-snap:merging`]);
    // Mid-merge, NAME reads as the snapshot.
    expect(table(name)).toMatch(/ snapshot-merge /);
    expect(deviceSha(origin)).toBe(atSnapshot);
    expect(table(name)).toMatch(/ snapshot-merge /);

    const waiting = runCli(['rollback', name, '--wait']);
    await until(() => spawnSync('pgrep', ['-f', `rollback ${name} --wait`]).status === 0, 10_000);
    spawnSync('pkill', ['-KILL', '-f', `rollback ${name} --wait`]);
    expect(await waiting).toMatchObject({ signal: 'SIGKILL' });
    expect(table(name)).toMatch(/ snapshot-merge /);
    // The kernel goes on without dmsnap: at full speed now, and waited for as an administrator would.
    undelay(`${name}-slow`, backing);
    await until(() => /^0 \d+ snapshot-merge (\d+)\/\d+ \1$/.test(dmsetup('status', name).trim()), 60_000);
    // Any command on the origin finishes a merge that is done.
    expect(status(name)).toEqual([]);
    expect(table(name)).toBe(table(`${name}-real`));
    expect(deviceSha(origin)).toBe(atSnapshot);
    run('e2fsck', ['-fn', origin]);
    expect(invariantViolations()).toEqual([]);
  });
  kernelCell('reports a merge stopped by a write error under the COW and leaves it as it is: nothing dropped, nothing new taken, recover keeps it', async () => {
    const disk = createLoopDevice(32 * MiB);
    const name = fresh();
    const origin = `/dev/mapper/${name}`;
    expect(cli(['prepare', disk, '--name', name]).status).toBe(0);
    writeScattered(origin, 0, 256);
    const backing = createLoopDevice(24 * MiB);
    const cow = delayedDevice(backing, `${name}-flaky`);
    expect(cli(['snapshot', name, '--cow', cow, '--chunk-size', '32k', '-q'])).toMatchObject({ status: 0, stderr: '' });
    writeScattered(origin, 0, 256);
    expect(cli(['rollback', name])).toMatchObject({ status: 0 });
    // The COW starts failing every write: the merge's next metadata commit fails.
    const size = run('blockdev', ['--getsz', backing]).trim();
    run('dmsetup', ['load', `${name}-flaky`, '--table', `0 ${size} flakey ${backing} 0 0 1 1 error_writes`]);
    run('dmsetup', ['suspend', '--noflush', `${name}-flaky`]);
    run('dmsetup', ['resume', `${name}-flaky`]);
    try {
      await until(() => / snapshot-merge Merge failed$/.test(dmsetup('status', name).trim()), 60_000);
      expect(dmsetup('status', name).trim()).toMatch(/ snapshot-merge Merge failed$/);
      expect(status(name)).toEqual([`${name}-snap:merge-failed`]);
      expect(JSON.parse(cli(['status', name, '--json']).stdout).origins[0].merge).toMatchObject({ state: 'merge-failed', leftSectors: null });
      const tables = `${table(name)}|${table(`${name}-snap`)}`;
      const waited = cli(['rollback', name, '--wait']);
      expect(waited.status).toBe(1);
      expect(waited.stderr).toMatch(/stopped on an error .* fix the device error/);
      expect(cli(['drop', name])).toMatchObject({ status: 4 });
      expect(cli(['snapshot', name, '--cow', createLoopDevice(8 * MiB)])).toMatchObject({ status: 4 });
      const recovered = JSON.parse(cli(['recover', '--json']).stdout) as { actions: { device: string; action: string; reason: string }[] };
      expect(recovered.actions.filter((a) => a.device.startsWith(name))).toEqual([
        expect.objectContaining({ device: `${name}-snap`, action: 'kept' }),
        expect.objectContaining({ device: name, action: 'kept', reason: expect.stringMatching(/stopped on an error/) }),
      ]);
      expect(`${table(name)}|${table(`${name}-snap`)}`).toBe(tables);
      expect(invariantViolations()).toEqual([]);
    } finally {
      // By hand, as an administrator would once the data is safe: the origin back on its
      // linear table, the merged snapshot removed.
      run('dmsetup', ['load', name, '--table', run('dmsetup', ['table', `${name}-real`]).trim()]);
      run('dmsetup', ['resume', name]);
      run('dmsetup', ['remove', `${name}-snap`]);
      // Its COW mapping is left over; recover removes it, though the label under it cannot
      // be cleared on the failing device (an unsealed label is never attached anyway).
      const recovered = JSON.parse(cli(['recover', '--json']).stdout) as { actions: { device: string; action: string; reason: string }[] };
      expect(recovered.actions.filter((a) => a.device.startsWith(name))).toEqual([
        expect.objectContaining({ device: `${name}-snap-cow`, action: 'removed', reason: expect.stringMatching(/label could not be cleared/) }),
      ]);
    }
  });
});

const STEPS = ['mark-merging', 'load-merge-table', 'suspend-snapshot', 'start-merge', 'resume-merged-snapshot', 'load-final-table', 'swap-final-table', 'remove-merged-snapshot'];
// The primary cell kills after every step (what recover and the guardian do is dmsnap's own
// logic, the same on every kernel); the other kernel cells after the start of the merge,
// the state only the kernel makes (a merge running without dmsnap). The cells with udev
// run the rollback of a mounted-then-unmounted XFS only: what udev changes is its probing
// of the origin and of the devices that come and go.
const KILLED = cellRole === 'primary' ? STEPS : withUdev ? [] : ['start-merge'];

const describeKills = KILLED.length > 0 ? describe : describe.skip;

describeKills('a rollback killed after each step', () => {
  it.each(KILLED.length > 0 ? KILLED : ['none'])('after %s: nothing stays suspended, recover keeps the state consistent, and the rollback ends with the snapshot content', async (step) => {
    const disk = createLoopDevice(16 * MiB);
    const name = fresh();
    const origin = `/dev/mapper/${name}`;
    expect(cli(['prepare', disk, '--name', name]).status).toBe(0);
    writeRandom(origin, 0, 16);
    expect(cli(['snapshot', name, '--cow', createLoopDevice(16 * MiB), '-q']).status).toBe(0);
    const atSnapshot = deviceSha(`/dev/mapper/${name}-snap`);
    writeRandom(origin, 2, 6);
    const changed = deviceSha(origin);

    const killed = await runCli(['rollback', name, '--wait'], step);
    expect(killed).toMatchObject({ signal: 'SIGKILL' });
    // The guardian resumes what the dead process left suspended, recover or not.
    await until(() => suspendedOf(name).length === 0, 5000);
    expect(suspendedOf(name)).toEqual([]);
    const merged = STEPS.indexOf(step) >= STEPS.indexOf('start-merge');
    if (!merged) expect(deviceSha(origin)).toBe(changed);

    expect(cli(['recover', '--json'])).toMatchObject({ status: 0, stderr: '' });
    expect(invariantViolations()).toEqual([]);
    // Started or not, the same command ends it (unless the killed one got to the end).
    if (exists(`${name}-snap`)) expect(cli(['rollback', name, '--wait', '-q'])).toMatchObject({ status: 0, stderr: '' });
    expect(exists(`${name}-snap`)).toBe(false);
    expect(table(name)).toBe(table(`${name}-real`));
    expect(deviceSha(origin)).toBe(atSnapshot);
    expect(invariantViolations()).toEqual([]);
  });
});
