/**
 * The shared loop-device suite against the real kernel, and the kernel fact a COW file
 * depends on: a persistent snapshot whose COW is a loop device over a file keeps working
 * when the file grows, LOOP_SET_CAPACITY is issued and its COW mapping (past dmsnap's label)
 * is loaded at the new size, with no reload of the snapshot's own table.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DeviceMapper, prepare } from '../../lib';
import type { AttachedLoop } from '../../lib/system/loop';
import { System } from '../../lib/system/system';
import { growCowMapping } from '../../lib/snapshot/cow-mapping';
import { currentGroup } from '../../lib/snapshot/invariants';
import { parseTag } from '../../lib/snapshot/tags';
import { eventually, loopSuite } from '../shared/loop.suite';
import { createLoopDevice, run, scratchDir } from './support/system';

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(scratchDir(), 'loop-files-'));
let files = 0;

function sparseFile(sizeBytes: number): string {
  const path = join(dir, `file${files++}.img`);
  writeFileSync(path, '');
  truncateSync(path, sizeBytes);
  return path;
}

/** st_dev split as the kernel encodes it (new_encode_dev), and st_ino. */
function identity(path: string): { major: number; minor: number; inode: number } {
  const { dev, ino } = statSync(path, { bigint: true });
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & 0xfffff000n);
  const minor = (dev & 0xffn) | ((dev >> 12n) & 0xffffff00n);
  return { major: Number(major), minor: Number(minor), inode: Number(ino) };
}

loopSuite({
  openClient: () => DeviceMapper.open(),
  makeFile: async (sizeBytes) => sparseFile(sizeBytes),
  makeSymlink: async (target) => {
    const path = join(dir, `link${files++}`);
    symlinkSync(target, path);
    return path;
  },
  makeDirectory: async () => {
    const path = join(dir, `dir${files++}`);
    mkdirSync(path);
    return path;
  },
  missingPath: () => join(dir, `missing${files++}`),
  growFile: async (path, sizeBytes) => truncateSync(path, sizeBytes),
  fileIdentity: identity,
});

describe('direct I/O of a loop device, by backing filesystem', () => {
  it('is taken over a file on ext4 (on a 512-byte-sector disk), and reported by LOOP_GET_STATUS64', async () => {
    const disk = createLoopDevice(32 * MiB);
    run('mkfs.ext4', ['-q', '-F', disk]);
    const mnt = mkdtempSync(join(scratchDir(), 'ext4-'));
    run('mount', [disk, mnt]);
    const dm = await DeviceMapper.open();
    const loops = System.of(dm).loop;
    const held: AttachedLoop[] = [];
    try {
      const file = join(mnt, 'cow.img');
      writeFileSync(file, '');
      truncateSync(file, 4 * MiB);
      const loop = await loops.attach(file, { tag: 'DMSNAP-dio-cow' });
      held.push(loop);
      const plain = await loops.attach(sparseFile(MiB), { tag: 'DMSNAP-tmpfs-cow' });
      held.push(plain);
      console.log(`kernel ${process.env.DMSNAP_VM_KERNEL}: direct I/O over ext4 ${loop.directIo}, over tmpfs ${plain.directIo}`);
      expect(loop.directIo).toBe(true);
      expect(await loops.status(loop.device)).toMatchObject({ directIo: true, autoclear: true, backing: identity(file), sizeBytes: 4 * MiB });
    } finally {
      for (const loop of held) loop.release();
      for (const loop of held) await eventually(() => expect(loops.status(loop.device)).rejects.toMatchObject({ code: 'ENXIO' }));
      dm.close();
      run('umount', [mnt]);
    }
  });
});

/** Random data through a device, O_DIRECT, in 64 KiB blocks. */
function writeRandom(device: string, bytes: number): void {
  execFileSync('dd', ['if=/dev/urandom', `of=${device}`, 'bs=64K', `count=${bytes / (64 * 1024)}`, 'oflag=direct', 'conv=notrunc', 'status=none']);
}

function sha(device: string, bytes: number): string {
  const buffer = Buffer.alloc(bytes);
  const fd = openSync(device, 'r');
  try {
    let done = 0;
    while (done < bytes) done += readSync(fd, buffer, done, bytes - done, done);
  } finally {
    closeSync(fd);
  }
  return createHash('sha256').update(buffer).digest('hex');
}

describe('a loop number an earlier user left read-only', () => {
  it('is attached writable: the read-only policy of BLKROSET outlives a detach', async () => {
    const dm = await DeviceMapper.open();
    const loops = System.of(dm).loop;
    // losetup takes the lowest free number, as LOOP_CTL_GET_FREE does for dmsnap next.
    const left = run('losetup', ['--find', '--show', sparseFile(MiB)]).trim();
    run('blockdev', ['--setro', left]);
    run('losetup', ['--detach', left]);
    // With udev probing the device (the change BLKROSET raised), the kernel defers the
    // detach to the last close; until then the number is not free.
    await eventually(() => expect(loops.status(left)).rejects.toMatchObject({ code: 'ENXIO' }));
    const loop = await loops.attach(sparseFile(MiB), { tag: 'DMSNAP-ro-test' });
    try {
      expect(loop.device).toBe(left);
      expect(run('blockdev', ['--getro', loop.device]).trim()).toBe('0');
      run('dd', ['if=/dev/zero', `of=${loop.device}`, 'bs=4k', 'count=1', 'oflag=direct', 'status=none']);
    } finally {
      loop.release();
      await eventually(() => expect(loops.status(loop.device)).rejects.toMatchObject({ code: 'ENXIO' }));
      dm.close();
    }
  });
});

describe('a persistent snapshot whose COW is a loop device over a file', () => {
  const lockDir = mkdtempSync('/tmp/dmsnap-locks-');
  let dm: DeviceMapper;
  let counter = 0;

  beforeEach(async () => {
    dm = await DeviceMapper.open();
  });

  afterEach(() => dm.close());

  /** An origin of 16 MiB full of random data, a snapshot on a loop over a 1 MiB file, and 4 MiB rewritten; `grow` runs before the writes. */
  async function overwriteAfter(grow: (file: string, device: string, snapshotName: string) => Promise<void>) {
    const disk = createLoopDevice(16 * MiB);
    writeRandom(disk, 16 * MiB);
    const origin = await prepare(disk, { dm, lockDir, name: `dmsnap-lc${process.pid}-${counter++}` });
    const before = sha(origin.devicePath, 4 * MiB);
    const file = sparseFile(1 * MiB);
    const loops = System.of(dm).loop;
    const loop = await loops.attach(file, { tag: `DMSNAP-${origin.originId}-cow` });
    const snap = await origin.snapshot({ cow: loop.device });
    // The snapshot table holds the loop from here; with autoclear it goes with the table.
    loop.release();
    const table = await dm.table(snap.name);
    const first = await snap.status();
    await grow(file, loop.device, snap.name);
    writeRandom(origin.devicePath, 4 * MiB);
    const after = await snap.status();
    const report = {
      first,
      after,
      tableUnchanged: JSON.stringify(await dm.table(snap.name)) === JSON.stringify(table),
      snapshotKeepsData: after.state === 'active' ? sha(snap.devicePath, 4 * MiB) === before : null,
      originChanged: sha(origin.devicePath, 4 * MiB) !== before,
    };
    // Measured facts, for the report of the run.
    console.log(`kernel ${process.env.DMSNAP_VM_KERNEL}: loop COW ${loop.device} directIo=${loop.directIo}`, JSON.stringify(report));
    await snap.drop();
    await origin.release();
    // The loop is detached with the snapshot's table.
    await eventually(() => expect(loops.status(loop.device)).rejects.toMatchObject({ code: 'ENXIO' }));
    return report;
  }

  it('keeps working when the file grows and LOOP_SET_CAPACITY is issued, without reloading its table', async () => {
    const report = await overwriteAfter(async (file, device, snapshotName) => {
      truncateSync(file, 8 * MiB);
      await expect(System.of(dm).loop.grow(device)).resolves.toBe(8 * MiB);
      // The snapshot sees the loop device past dmsnap's label, through its COW mapping: that
      // linear table grows with it (the snapshot's own table is never reloaded).
      const [mapping] = (await currentGroup(dm, parseTag((await dm.info(snapshotName)).uuid)!.originId)).cows;
      await growCowMapping(dm, mapping, await System.of(dm).blockDevice(device));
    });
    // The kernel sees the COW past dmsnap's label (64 KiB).
    expect(report.first).toMatchObject({ state: 'active', totalSectors: 2048 - 128 });
    expect(report.after).toMatchObject({ state: 'active', totalSectors: 16384 - 128 });
    // More was copied than the COW first held: the snapshot used the new space.
    expect(report.after.allocatedSectors).toBeGreaterThan(2048);
    expect(report.tableUnchanged).toBe(true);
    expect(report.snapshotKeepsData).toBe(true);
    expect(report.originChanged).toBe(true);
  });

  it('is invalidated by the same writes when the file is not grown (the control)', async () => {
    const report = await overwriteAfter(async () => undefined);
    expect(report.first).toMatchObject({ state: 'active', totalSectors: 2048 - 128 });
    expect(report.after).toMatchObject({ state: 'invalid' });
    expect(report.originChanged).toBe(true);
  });
});
