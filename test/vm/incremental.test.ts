/**
 * Incremental images on a real kernel: XFS on md RAID1 with a writer that never stops; a
 * full image with --track; then, with about 1 % of the data changed each time, --update
 * three times (once in the secondary cells; the image equal to the new tracking snapshot's
 * device, compared byte for byte),
 * and the same through --delta and `dmsnap apply` onto a copy of the image (with a COW
 * file, and once through a pipe). Every cycle the exceptions dmsnap parses from the COW
 * equal the data chunks the kernel's status counts. Refused: an image of another origin
 * or size, and an update from an invalidated tracking snapshot (exit 3, image untouched).
 * A SIGKILL inside an update is completed by the same command.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { DeviceMapper, openOrigin, prepare, type Origin, type Snapshot } from '../../lib';
import { readSnapshotExceptions } from '../../lib/snapshot/changes';
import { readImageIdentity } from '../../lib/snapshot/image-identity';
import { runCli } from './support/model';
import { cellRole, cli, createLoopDevice, expectSameContent, run, scratchDir } from './support/system';

const MiB = 1024 * 1024;
const CLI = join(process.cwd(), 'dist/dmsnap.js');

/** When a file's content or metadata last changed, to the nanosecond: unchanged means not written. */
function writeStamp(path: string): string {
  const st = statSync(path, { bigint: true });
  return `${st.mtimeNs} ${st.ctimeNs} ${st.size}`;
}

/** Overwrites about `percent` % of the origin's data: 64 KiB pieces at spread offsets of the data file. */
function change(mnt: string, dataBytes: number, originBytes: number, percent: number, round: number): void {
  const pieces = Math.ceil((originBytes * percent) / 100 / (64 * 1024));
  const fd = openSync(join(mnt, 'data.bin'), 'r+');
  try {
    for (let i = 0; i < pieces; i++) {
      const slot = Math.floor((((i * 7919 + round * 104729) % 1000) / 1000) * (dataBytes / (64 * 1024)));
      writeSync(fd, randomBytes(64 * 1024), 0, 64 * 1024, slot * 64 * 1024);
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

// Three update cycles in every cell; the secondary cells make one delta (through a pipe)
// and kill one update step, the primary cell two of each (CI's time).
const CYCLES = 3;
const SECONDARY = cellRole === 'secondary';

describe('incremental images from a tracking snapshot', () => {
  const name = `inc${process.pid}`;
  const md = '/dev/md110';
  let dm: DeviceMapper;
  let origin: Origin;
  let mnt: string;
  let host: string;
  let writer: ChildProcess;
  let cows: string[];
  let image: string;
  const DATA = 96 * MiB;

  async function tracking(): Promise<Snapshot[]> {
    return (await (await openOrigin(name, { dm })).snapshots()).filter((s) => s.info.trackingSince !== null);
  }

  async function theTracking(): Promise<Snapshot> {
    const all = await tracking();
    expect(all).toHaveLength(1);
    return all[0];
  }

  /** The exceptions dmsnap parses equal the data chunks of the kernel's status (read while the status holds still). */
  async function expectExceptionsMatchStatus(snap: Snapshot): Promise<number> {
    writer.kill('SIGSTOP');
    try {
      for (let attempt = 0; attempt < 10; attempt++) {
        run('sync', []);
        const before = await snap.status();
        const parsed = (await readSnapshotExceptions(snap)).length;
        const after = await snap.status();
        if (before.allocatedSectors !== after.allocatedSectors) continue;
        expect(after.state).toBe('active');
        expect(parsed).toBe((after.allocatedSectors! - after.metadataSectors!) / snap.info.chunkSectors);
        return parsed;
      }
      throw new Error('the snapshot status never held still');
    } finally {
      writer.kill('SIGCONT');
    }
  }

  beforeAll(async () => {
    dm = await DeviceMapper.open();
    // XFS needs more than 300 MB.
    const a = createLoopDevice(320 * MiB);
    const b = createLoopDevice(320 * MiB);
    cows = [createLoopDevice(16 * MiB), createLoopDevice(16 * MiB)];
    run('mdadm', ['--create', md, '--metadata=0.90', '--level=1', '--raid-devices=2', '--assume-clean', '--run', '--quiet', a, b]);
    origin = await prepare(md, { dm, name });
    run('mkfs.xfs', ['-q', '-f', origin.devicePath]);
    mnt = mkdtempSync(join(scratchDir(), 'incorigin-'));
    run('mount', [origin.devicePath, mnt]);
    run('dd', ['if=/dev/urandom', `of=${join(mnt, 'data.bin')}`, 'bs=1M', `count=${DATA / MiB}`, 'conv=fsync', 'status=none']);
    mkdirSync(join(mnt, 'writer'));
    writer = spawn(process.execPath, [join(__dirname, 'support/writer.js'), join(mnt, 'writer', 'log'), '64'], { stdio: ['ignore', 'ignore', 'inherit'] });
    for (let i = 0; i < 600 && !(existsSync(join(mnt, 'writer', 'log')) && statSync(join(mnt, 'writer', 'log')).size > 0); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    // COW files for the deltas: ext4 on a device of its own.
    const hostDisk = createLoopDevice(128 * MiB);
    run('mkfs.ext4', ['-q', '-F', hostDisk]);
    host = mkdtempSync(join(scratchDir(), 'inchost-'));
    run('mount', [hostDisk, host]);
    image = join(scratchDir(), 'inc.img');
  });

  afterAll(async () => {
    if (writer && writer.exitCode === null) {
      writer.kill('SIGKILL');
      await new Promise((r) => writer.once('exit', r));
    }
    if (origin) for (const snap of await (await openOrigin(name, { dm })).snapshots()) await snap.drop();
    if (mnt) run('umount', [mnt]);
    if (origin) await origin.release();
    run('mdadm', ['--stop', md]);
    if (host) run('umount', [host]);
    dm.close();
  });

  it(`keeps an image equal to the origin at each new freeze through ${CYCLES} updates, copying only the changes`, async () => {
    const full = cli(['image', name, '--cow', cows[0], '--output', image, '--sparse', '--track', '--chunk-size', '4k', '-q']);
    expect(full.stderr).toBe('');
    expect(full.status).toBe(0);
    let snap = await theTracking();
    expect(readImageIdentity(image)).toMatchObject({ state: 'complete', snapId: snap.info.snapId, originId: origin.originId, chunkBytes: 4096 });
    expectSameContent(image, snap.devicePath);
    const listed = JSON.parse(cli(['ls', '--json']).stdout).origins.find((o: { name: string }) => o.name === name);
    expect(listed.snapshots).toEqual([expect.objectContaining({ name: snap.name, trackingSince: snap.info.trackingSince!.toISOString() })]);

    for (let cycle = 0; cycle < CYCLES; cycle++) {
      change(mnt, DATA, origin.sizeBytes, 1, cycle);
      const exceptions = await expectExceptionsMatchStatus(snap);
      // 4 KiB chunks: 256 exceptions per metadata area, so the table spans several.
      expect(exceptions).toBeGreaterThan(512);
      const changes = JSON.parse(cli(['changes', name, '--json']).stdout);
      expect(changes.snapshot).toBe(snap.name);
      expect(changes.changedBytes).toBeGreaterThanOrEqual(origin.sizeBytes / 100);
      expect(changes.changedBytes).toBeLessThan(origin.sizeBytes / 10);

      const updated = cli(['image', name, '--cow', cows[(cycle + 1) % 2], '--update', image, '-q']);
      expect(updated.stderr).toBe('');
      expect(updated.status).toBe(0);
      const next = await theTracking();
      expect(next.info.snapId).not.toBe(snap.info.snapId);
      // The chain keeps its chunk size.
      expect(next.info.chunkSectors).toBe(8);
      expect(readImageIdentity(image)).toMatchObject({ state: 'complete', snapId: next.info.snapId });
      expectSameContent(image, next.devicePath);
      snap = next;
    }
  });

  it('does the same through --delta and dmsnap apply onto a copy of the image, with a COW file, and through a pipe', async () => {
    const copy = join(scratchDir(), 'inc-copy.img');
    run('cp', ['--sparse=always', image, copy]);
    copyFileSync(`${image}.dmsnap`, `${copy}.dmsnap`);
    for (let cycle = SECONDARY ? 1 : 0; cycle < 2; cycle++) {
      change(mnt, DATA, origin.sizeBytes, 1, 10 + cycle);
      await expectExceptionsMatchStatus(await theTracking());
      const deltaFile = join(scratchDir(), `inc-${cycle}.delta`);
      if (cycle === 0) {
        const made = cli(['image', name, '--cow-file', join(host, `d${cycle}.cow`), '--delta', deltaFile, '-q']);
        expect(made.stderr).toBe('');
        expect(made.status).toBe(0);
        expect(statSync(deltaFile).size).toBeLessThan(origin.sizeBytes / 10);
        const applied = cli(['apply', deltaFile, copy, '-q']);
        expect(applied.stderr).toBe('');
        expect(applied.status).toBe(0);
      } else {
        const piped = spawnSync('bash', ['-c', `set -o pipefail; "${process.execPath}" ${CLI} image ${name} --cow-file ${join(host, `d${cycle}.cow`)} --delta - -q | "${process.execPath}" ${CLI} apply - ${copy} -q`], { encoding: 'utf8' });
        expect(piped.stderr).toBe('');
        expect(piped.status).toBe(0);
      }
      const snap = await theTracking();
      expect(snap.info.cowFile).toBe(join(host, `d${cycle}.cow`));
      expectSameContent(copy, snap.devicePath);
    }
    // The COW file of each dropped tracking snapshot is gone; the live one's is there.
    if (!SECONDARY) expect(existsSync(join(host, 'd0.cow'))).toBe(false);
    expect(existsSync(join(host, 'd1.cow'))).toBe(true);
    // The chain goes on with the copy.
    rmSync(image);
    rmSync(`${image}.dmsnap`);
    image = copy;
  });

  it('refuses an image of another origin or of another size, and leaves it and the tracking snapshot as they were', async () => {
    const tracked = await theTracking();
    const cow = tracked.info.cowFile ? cows[0] : tracked.info.cowDevice.path === cows[0] ? cows[1] : cows[0];
    const other = join(scratchDir(), 'other.img');
    run('cp', ['--sparse=always', image, other]);
    const identity = readImageIdentity(image)!;
    writeFileSync(`${other}.dmsnap`, JSON.stringify({ ...identity, originId: 'ffffffffffffffff', originName: 'elsewhere' }));
    const stamp = writeStamp(other);
    const refused = cli(['image', name, '--cow', cow, '--update', other, '-q']);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/another origin \(elsewhere/);
    expect(writeStamp(other)).toBe(stamp);
    expectSameContent(other, tracked.devicePath);
    writeFileSync(`${other}.dmsnap`, JSON.stringify(identity));
    truncateSync(other, origin.sizeBytes - 4096);
    const short = cli(['image', name, '--cow', cow, '--update', other, '-q']);
    expect(short.status).toBe(1);
    expect(short.stderr).toMatch(/not the origin's/);
    expect((await theTracking()).info.snapId).toBe(tracked.info.snapId);
    rmSync(other);
    rmSync(`${other}.dmsnap`);
  });

  it.each(SECONDARY ? ['copy-extent'] : ['copy-extent', 'mark-complete'])('completes an update killed after %s when the same command runs again', async (step) => {
    const before = await theTracking();
    const cow = before.info.cowDevice.path === cows[0] ? cows[1] : cows[0];
    change(mnt, DATA, origin.sizeBytes, 1, step.length);
    const killed = await runCli(['image', name, '--cow', cow, '--update', image], step);
    expect(killed.signal).toBe('SIGKILL');
    expect(await tracking()).toHaveLength(2);
    expect(readImageIdentity(image)!.state).toBe(step === 'copy-extent' ? 'updating' : 'complete');
    if (step === 'mark-complete') {
      // Done but for dropping the old tracking snapshot: the image holds the new one.
      const newest = (await tracking()).find((s) => s.info.snapId === readImageIdentity(image)!.snapId)!;
      expectSameContent(image, newest.devicePath);
    }
    // After mark-complete the run again is the next update, on the old snapshot's COW (dropped first).
    const again = cli(['image', name, '--cow', step === 'mark-complete' ? before.info.cowDevice.path! : cow, '--update', image, '-q']);
    expect(again.stderr).toBe('');
    expect(again.status).toBe(0);
    const after = await theTracking();
    expect(readImageIdentity(image)).toMatchObject({ state: 'complete', snapId: after.info.snapId });
    expectSameContent(image, after.devicePath);
  });

  it('refuses an update from an invalidated tracking snapshot (exit 3), leaving the image untouched', async () => {
    const snap = await theTracking();
    // More than its 16 MiB COW holds (a COW file would hold it all: this one is a device).
    expect(snap.info.cowFile).toBeNull();
    run('dd', ['if=/dev/zero', `of=${join(mnt, 'data.bin')}`, 'bs=1M', 'count=24', 'conv=notrunc,fsync', 'status=none']);
    expect((await snap.status()).state).toBe('invalid');
    const stamp = writeStamp(image);
    const identity = readFileSync(`${image}.dmsnap`, 'utf8');
    const cow = snap.info.cowDevice.path === cows[0] ? cows[1] : cows[0];
    const refused = cli(['image', name, '--cow', cow, '--update', image, '-q']);
    expect(refused.status).toBe(3);
    expect(refused.stderr).toMatch(/changes since it was taken are lost/);
    expect(writeStamp(image)).toBe(stamp);
    expect(readFileSync(`${image}.dmsnap`, 'utf8')).toBe(identity);
    const changes = cli(['changes', name]);
    expect(changes.status).toBe(3);
  });
});
