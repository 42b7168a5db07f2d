/**
 * Incremental updates under faults, on a real kernel: two updates of one image at once,
 * a filesystem too full for the changed chunks, and an I/O error under the tracking
 * snapshot's COW while its exception table is read. A failure says what failed and what
 * to do, leaves the image marked incomplete (never reported good) and the chain whole;
 * once the cause is gone, the same command completes the update, and the image equals
 * the new tracking snapshot byte for byte.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { DeviceMapper, openOrigin, prepare, type Origin, type Snapshot } from '../../lib';
import { readImageIdentity } from '../../lib/snapshot/image-identity';
import { runCli } from './support/model';
import { cli, createLoopDevice, dmsetup, expectSameContent, run, scratchDir, withUdev } from './support/system';

const MiB = 1024 * 1024;
const CLI = join(process.cwd(), 'dist/dmsnap.js');

/** Runs the CLI in the background; resolves its exit code and output. */
function background(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('exit', (status) => resolve({ status, stdout, stderr })));
}

describe('incremental updates under faults', () => {
  const name = `incf${process.pid}`;
  const faultCow = `${name}-fcow`;
  let dm: DeviceMapper;
  let origin: Origin;
  let mnt: string;
  let images: string;
  let image: string;
  let faultCowDisk: string;
  let cows: string[];
  let round = 0;

  /** Writes `bytes` of new data on the origin's filesystem: a new file, so new blocks (holes in a sparse image). */
  function change(bytes: number): void {
    const fd = openSync(join(mnt, `new-${round++}.bin`), 'w');
    try {
      for (let done = 0; done < bytes; done += MiB) writeSync(fd, randomBytes(MiB));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  async function tracking(): Promise<Snapshot[]> {
    return (await (await openOrigin(name, { dm })).snapshots()).filter((s) => s.info.trackingSince !== null);
  }

  async function expectTrackedImage(): Promise<void> {
    const all = await tracking();
    expect(all).toHaveLength(1);
    expect(readImageIdentity(image)).toMatchObject({ state: 'complete', snapId: all[0].info.snapId });
    expectSameContent(image, all[0].devicePath);
  }

  beforeAll(async () => {
    dm = await DeviceMapper.open();
    origin = await prepare(createLoopDevice(64 * MiB), { dm, name });
    run('mkfs.ext4', ['-q', '-F', origin.devicePath]);
    mnt = mkdtempSync(join(scratchDir(), 'incf-origin-'));
    run('mount', [origin.devicePath, mnt]);
    change(8 * MiB);
    // A COW under a mapping of the test's own, to fail its reads at will.
    faultCowDisk = createLoopDevice(16 * MiB);
    const sectors = run('blockdev', ['--getsz', faultCowDisk]).trim();
    dmsetup('create', faultCow, '--table', `0 ${sectors} linear ${faultCowDisk} 0`);
    if (!withUdev) dmsetup('mknodes', faultCow);
    cows = [createLoopDevice(16 * MiB), createLoopDevice(16 * MiB)];
    // The images on a small filesystem of their own, to fill it.
    images = mkdtempSync(join(scratchDir(), 'incf-images-'));
    run('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'incf', images]);
    image = join(images, 'a.img');
    const full = cli(['image', name, '--cow', `/dev/mapper/${faultCow}`, '--output', image, '--sparse', '--track', '--chunk-size', '4k', '-q']);
    expect({ status: full.status, stderr: full.stderr }).toEqual({ status: 0, stderr: '' });
  });

  afterAll(async () => {
    if (origin) for (const snap of await (await openOrigin(name, { dm })).snapshots()) await snap.drop();
    if (mnt) run('umount', [mnt]);
    if (origin) await origin.release();
    spawnSync('dmsetup', ['remove', faultCow]);
    if (images) run('umount', [images]);
    dm.close();
  });

  it('runs two updates of one image at once one after the other; both succeed and the image is right', async () => {
    await expectTrackedImage();
    change(MiB);
    const env = { DMSNAP_LOCK_TIMEOUT: '240' };
    const [a, b] = await Promise.all([
      background(['image', name, '--cow', cows[0], '--update', image, '-q'], env),
      background(['image', name, '--cow', cows[1], '--update', image, '-q'], env),
    ]);
    expect([a, b]).toEqual([
      { status: 0, stdout: '', stderr: '' },
      { status: 0, stdout: '', stderr: '' },
    ]);
    await expectTrackedImage();
    // The tracking snapshot is on one of the two COWs; the first one's is free again.
    expect(cows).toContain((await tracking())[0].info.cowDevice.path);
  });

  it('stops on a full filesystem, keeps the image marked incomplete, and completes once there is room', async () => {
    const before = (await tracking())[0];
    const cow = before.info.cowDevice.path === cows[0] ? cows[1] : cows[0];
    // Fill the images' filesystem but for 1 MiB (room for the identity, not the changes), then change 4 MiB.
    const avail = Number(run('df', ['--output=avail', '-B1M', images]).split('\n')[1]);
    run('dd', ['if=/dev/zero', `of=${join(images, 'filler')}`, 'bs=1M', `count=${avail - 1}`, 'status=none']);
    change(4 * MiB);
    const full = cli(['image', name, '--cow', cow, '--update', image, '-q']);
    expect(full.status).toBe(1);
    expect(full.stderr).toMatch(/^dmsnap image: the update of .*a\.img stopped: .*ENOSPC.*marked incomplete.*free space on the filesystem of .*run the same command again/);
    expect(full.stderr).not.toMatch(/unexpected error|\n +at /);
    expect(readImageIdentity(image)).toMatchObject({ state: 'updating', snapId: before.info.snapId });
    // The chain is whole: the old tracking snapshot is kept, and the new one waits to be completed.
    expect((await tracking()).map((s) => s.info.snapId)).toContain(before.info.snapId);
    rmSync(join(images, 'filler'));
    const again = cli(['image', name, '--cow', cow, '--update', image, '-q']);
    expect({ status: again.status, stderr: again.stderr }).toEqual({ status: 0, stderr: '' });
    await expectTrackedImage();
  });

  it('stops on an I/O error reading the exception table, and completes once the device is back', async () => {
    // Back to a tracking snapshot on the COW under the test's mapping.
    change(MiB);
    expect(cli(['image', name, '--cow', `/dev/mapper/${faultCow}`, '--update', image, '-q']).status).toBe(0);
    const before = (await tracking())[0];
    expect(statSync(before.info.cowDevice.path!).rdev).toBe(statSync(`/dev/mapper/${faultCow}`).rdev);
    // An update killed once its new snapshot is taken: the rerun takes none (no freeze, so
    // no origin write that would invalidate the old snapshot while its COW fails).
    change(MiB);
    expect((await runCli(['image', name, '--cow', cows[0], '--update', image], 'mark-updating')).signal).toBe('SIGKILL');
    run('sync', []);
    const sectors = run('blockdev', ['--getsz', faultCowDisk]).trim();
    const swap = (table: string) => {
      dmsetup('load', faultCow, '--table', table);
      dmsetup('suspend', faultCow);
      dmsetup('resume', faultCow);
    };
    swap(`0 ${sectors} error`);
    let failed;
    try {
      failed = cli(['image', name, '--cow', cows[0], '--update', image, '-q']);
    } finally {
      swap(`0 ${sectors} linear ${faultCowDisk} 0`);
    }
    expect(failed.status).toBe(1);
    expect(failed.stderr).toMatch(/^dmsnap image: the update of .*a\.img stopped: .*EIO.*marked incomplete.*dmesg.*run the same command again/);
    expect(failed.stderr).not.toMatch(/unexpected error|\n +at /);
    expect(readImageIdentity(image)).toMatchObject({ state: 'updating', snapId: before.info.snapId });
    expect((await before.status()).state).toBe('active');
    const again = cli(['image', name, '--cow', cows[0], '--update', image, '-q']);
    expect({ status: again.status, stderr: again.stderr }).toEqual({ status: 0, stderr: '' });
    await expectTrackedImage();
  });
});
