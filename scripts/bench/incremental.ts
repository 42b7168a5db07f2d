/**
 * The benchmark's incremental against full image: a 1 GiB origin (XFS, 256 MiB of data),
 * a full image with tracking, 1 % of the origin changed, then an incremental update of
 * the image. Bytes read are the process's read() bytes (/proc/self/io rchar: the device
 * copy and the exception table alike); wall time around each. The updated image is
 * checked against the new tracking snapshot.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { prepare, type DeviceMapper } from '../../lib';
import { copyDevice } from '../../lib/snapshot/image';
import { writeImageIdentity } from '../../lib/snapshot/image-identity';
import { identityOf, updateImage } from '../../lib/snapshot/incremental';

const MiB = 1024 * 1024;

export interface IncrementalResult {
  originBytes: number;
  changedBytes: number;
  full: { bytesRead: number; ms: number };
  incremental: { bytesRead: number; ms: number; extents: number; bytesCopied: number };
  imageMatches: boolean;
}

function rchar(): number {
  return Number(/^rchar: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'))![1]);
}

function sh(program: string, args: string[]): string {
  const result = spawnSync(program, args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${program} ${args.join(' ')}: ${result.stderr || result.error}`);
  return result.stdout;
}

async function measured<T>(fn: () => Promise<T>): Promise<{ value: T; bytesRead: number; ms: number }> {
  const bytes0 = rchar();
  const t0 = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - t0, bytesRead: rchar() - bytes0 };
}

/** Runs the comparison on devices of its own under `work`; leaves nothing behind. */
export async function measureIncremental(dm: DeviceMapper, work: string, loop: (dir: string, name: string, size: number) => string): Promise<IncrementalResult> {
  const originDisk = loop(work, 'inc-origin.img', 1024 * MiB);
  const cows = [loop(work, 'inc-cow0.img', 64 * MiB), loop(work, 'inc-cow1.img', 64 * MiB)];
  const origin = await prepare(originDisk, { dm, name: 'benchinc' });
  const mnt = join(work, 'inc-mnt');
  mkdirSync(mnt);
  sh('mkfs.xfs', ['-q', '-f', origin.devicePath]);
  sh('mount', [origin.devicePath, mnt]);
  const image = join(work, 'inc.img');
  try {
    sh('dd', ['if=/dev/urandom', `of=${join(mnt, 'data.bin')}`, 'bs=1M', 'count=256', 'conv=fsync', 'status=none']);
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    const full = await measured(async () => {
      const snap = await origin.snapshot({ cow: cows[0], tracking: true, name: 'benchinc-track0' });
      await copyDevice(snap.devicePath, origin.sizeBytes, image, { sparse: true });
      writeImageIdentity(image, identityOf(origin, snap));
    });
    // 1 % of the origin: 64 KiB pieces spread over the data.
    const pieces = Math.ceil(origin.sizeBytes / 100 / (64 * 1024));
    const fd = openSync(join(mnt, 'data.bin'), 'r+');
    for (let i = 0; i < pieces; i++) writeSync(fd, randomBytes(64 * 1024), 0, 64 * 1024, ((i * 2654435761) % 4096) * 64 * 1024);
    fsyncSync(fd);
    closeSync(fd);
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    const inc = await measured(() => updateImage(origin, image, { cow: cows[1] }));
    const imageSha = sh('sha256sum', [image]).split(' ')[0];
    const snapSha = sh('bash', ['-c', `dd if=${inc.value.tracking.devicePath} bs=1M iflag=direct status=none | sha256sum`]).split(' ')[0];
    await inc.value.tracking.drop();
    return {
      originBytes: origin.sizeBytes,
      changedBytes: pieces * 64 * 1024,
      full: { bytesRead: full.bytesRead, ms: full.ms },
      incremental: { bytesRead: inc.bytesRead, ms: inc.ms, extents: inc.value.extents, bytesCopied: inc.value.bytesCopied },
      imageMatches: imageSha === snapSha,
    };
  } finally {
    for (const snap of await origin.snapshots()) await snap.drop();
    sh('umount', [mnt]);
    await origin.release();
    spawnSync('rm', ['-f', image, `${image}.dmsnap`]);
  }
}
