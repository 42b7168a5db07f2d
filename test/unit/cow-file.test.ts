/**
 * COW files against the fake kernel: the file dmsnap creates, its loop device, its record,
 * and what drop and a failed snapshot leave (nothing). The kernel's side (the exception
 * store on a loop device, a crash at every step) is proven in test/vm/cow-file.test.ts.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceMapper, prepare, recover, type Origin } from '../../lib';
import { System } from '../../lib/system/system';
import { labelledCowSectors } from '../../lib/snapshot/cow-mapping';
import { createFakeSystem, fakeNodeDirectory, type FakeSystem } from '../support/fake-binding';

const MiB = 1024 * 1024;
let system: FakeSystem;
let nodes: { devDir: string; remove(): void };
let dm: DeviceMapper;
let lockDir: string;
let dir: string;
let origin: Origin;
let counter = 0;

beforeEach(async () => {
  system = createFakeSystem();
  nodes = fakeNodeDirectory(system);
  lockDir = mkdtempSync(join(tmpdir(), 'dmsnap-locks-'));
  // On tmpfs: the fake's device numbers (254:N for device-mapper) may be the host disk's.
  dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'dmsnap-cowfiles-'));
  dm = await DeviceMapper.open({ binding: system.binding, devDir: nodes.devDir, udev: false });
  origin = await prepare(system.addLoopDevice(8 * MiB), { dm, lockDir, name: `cowfile${counter++}` });
});

afterEach(() => {
  dm.close();
  nodes.remove();
  rmSync(lockDir, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
});

const records = () => (existsSync(join(lockDir, 'cow-files')) ? readdirSync(join(lockDir, 'cow-files')) : []).filter((f) => f.endsWith('.json'));
/** The loop devices dmsnap attached that are still attached (the fake numbers them from 0). */
async function attachedLoops(): Promise<string[]> {
  const found: string[] = [];
  for (let n = 0; n < 16; n++) {
    const status = await System.of(dm).loop.status(`/dev/loop${n}`).catch(() => undefined);
    if (status?.tag.startsWith('DMSNAP-')) found.push(status.device);
  }
  return found;
}

describe('a COW file', () => {
  it('is created sparse, as large as the origin plus metadata, served by a tagged loop device, and deleted by drop', async () => {
    const path = join(dir, 'a.cow');
    const snap = await origin.snapshot({ cowFile: { path } });
    const expected = labelledCowSectors(origin.sizeSectors, snap.info.chunkSectors) * 512;
    expect(statSync(path).size).toBe(expected);
    expect(statSync(path).blocks * 512).toBeLessThan(expected / 2);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(snap.info.cowFile).toBe(path);
    expect(snap.info.cowDevice.major).toBe(7);
    const loop = await System.of(dm).loop.status(`/dev/loop${snap.info.cowDevice.minor}`);
    expect(loop.tag).toBe(`DMSNAP-${origin.originId}-cow-${snap.info.snapId}`);
    expect(loop.autoclear).toBe(true);
    expect(loop.backing.inode).toBe(statSync(path).ino);
    const [status] = (await origin.status()).snapshots;
    expect(status).toMatchObject({ cowFile: path, state: 'active' });
    expect((await origin.snapshots())[0].info.cowFile).toBe(path);
    expect(records()).toHaveLength(1);

    await snap.drop();
    expect(existsSync(path)).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
    expect(records()).toEqual([]);
    expect(await attachedLoops()).toEqual([]);
  });

  it('has the size asked for, in whole chunks', async () => {
    const path = join(dir, 'small.cow');
    const snap = await origin.snapshot({ cowFile: { path, sizeBytes: 1 * MiB + 1 } });
    expect(statSync(path).size).toBe(1 * MiB + 16 * 1024);
    await snap.drop();
  });

  it('refuses an existing file, a symlink and a missing directory, and changes nothing', async () => {
    const existing = join(dir, 'existing');
    writeFileSync(existing, 'precious');
    await expect(origin.snapshot({ cowFile: { path: existing } })).rejects.toMatchObject({ code: 'ERR_DMSNAP_COW_FILE_EXISTS' });
    expect(readFileSync(existing, 'utf8')).toBe('precious');
    const target = join(dir, 'target');
    writeFileSync(target, 'also precious');
    const link = join(dir, 'link.cow');
    symlinkSync(target, link);
    await expect(origin.snapshot({ cowFile: { path: link } })).rejects.toMatchObject({ code: 'ERR_DMSNAP_COW_FILE_EXISTS' });
    expect(readFileSync(target, 'utf8')).toBe('also precious');
    await expect(origin.snapshot({ cowFile: { path: join(dir, 'missing', 'a.cow') } })).rejects.toMatchObject({ code: 'ERR_DMSNAP_UNSAFE_COW_FILE' });
    expect(readdirSync(dir).sort()).toEqual(['existing', 'link.cow', 'target']);
    expect(await origin.snapshots()).toEqual([]);
    expect(await attachedLoops()).toEqual([]);
  });

  it('refuses a directory other users can write to', async () => {
    const open = join(dir, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    await expect(origin.snapshot({ cowFile: { path: join(open, 'a.cow') } })).rejects.toMatchObject({ code: 'ERR_DMSNAP_UNSAFE_COW_FILE' });
    expect(readdirSync(open)).toEqual([]);
  });

  it('wants either cow or cowFile', async () => {
    await expect(origin.snapshot({})).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await expect(origin.snapshot({ cow: '/dev/loop9', cowFile: { path: join(dir, 'x') } })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await expect(origin.snapshot({ cowFile: { path: join(dir, 'x'), sizeBytes: 0 } })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    expect(readdirSync(dir)).toEqual([]);
  });

  it.each(['create-cow-file', 'attach-cow-file', 'validate', 'zero-cow', 'load-snapshot-table', 'resume-origin'] as const)(
    'leaves no file, loop device or record when the snapshot fails after %s',
    async (step) => {
      const path = join(dir, 'failing.cow');
      const onStep = (s: string) => {
        if (s === step) throw new Error(`failing after ${s}`);
      };
      await expect(origin.snapshot({ cowFile: { path }, onStep })).rejects.toThrow(`failing after ${step}`);
      expect(readdirSync(dir)).toEqual([]);
      expect(records()).toEqual([]);
      expect(await attachedLoops()).toEqual([]);
      expect(await origin.snapshots()).toEqual([]);
    },
  );

  it('is kept by drop with keepCowFile, and taken back by the next snapshot of the same path', async () => {
    const path = join(dir, 'kept.cow');
    const first = await origin.snapshot({ cowFile: { path } });
    const inode = statSync(path).ino;
    await first.drop({ keepCowFile: true });
    expect(statSync(path).ino).toBe(inode);
    expect(await attachedLoops()).toEqual([]);
    const second = await origin.snapshot({ cowFile: { path, sizeBytes: 2 * MiB } });
    expect(statSync(path).ino).toBe(inode);
    expect(statSync(path).size).toBe(2 * MiB);
    expect(records()).toHaveLength(1);
    await second.drop();
    expect(readdirSync(dir)).toEqual([]);
    expect(records()).toEqual([]);
  });

  it('is deleted by recover once its snapshot is gone, but not while the snapshot lives', async () => {
    const path = join(dir, 'orphan.cow');
    const snap = await origin.snapshot({ cowFile: { path } });
    expect((await recover({ dm, lockDir })).filter((a) => a.action === 'removed-cow-file')).toEqual([]);
    expect(existsSync(path)).toBe(true);
    // The snapshot device goes behind dmsnap's back (as a crash during drop leaves it).
    await dm.remove(snap.name);
    const actions = await recover({ dm, lockDir });
    expect(actions).toContainEqual(expect.objectContaining({ action: 'removed-cow-file', device: path }));
    expect(readdirSync(dir)).toEqual([]);
    expect(records()).toEqual([]);
    expect(await attachedLoops()).toEqual([]);
  });

  it('is not deleted by recover when another file took its name', async () => {
    const path = join(dir, 'replaced.cow');
    const snap = await origin.snapshot({ cowFile: { path } });
    await dm.remove(snap.name);
    rmSync(path);
    writeFileSync(path, 'not dmsnap\'s');
    await recover({ dm, lockDir });
    expect(readFileSync(path, 'utf8')).toBe('not dmsnap\'s');
    expect(records()).toEqual([]);
  });
});

describe('the guard of a COW file', () => {
  it('grows the file at the threshold, never past what the whole origin needs, with no table reload', async () => {
    const { guardCowFile } = await import('../../lib/snapshot/cow-guard');
    const path = join(dir, 'grow.cow');
    const snap = await origin.snapshot({ cowFile: { path, sizeBytes: 1 * MiB } });
    const table = await dm.table(snap.name);
    const grown: number[] = [];
    const stop = new AbortController();
    const guarding = guardCowFile(snap, { lockDir, autoextend: { thresholdPercent: 50, stepPercent: 100 }, intervalMs: 5, signal: stop.signal, onExtend: (g) => grown.push(g.sizeBytes) });
    // Write the whole origin, a chunk at a time, letting the guard look between writes.
    for (let sector = 0; sector < origin.sizeSectors; sector += 32) {
      system.writeOrigin(origin.name, 32, sector);
      await new Promise((r) => setTimeout(r, 2));
      if ((await snap.status()).state !== 'active') break;
    }
    for (let i = 0; i < 50 && grown.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    stop.abort();
    await guarding;
    const full = labelledCowSectors(origin.sizeSectors, snap.info.chunkSectors) * 512;
    expect((await snap.status()).state).toBe('active');
    expect(grown.length).toBeGreaterThan(1);
    expect(Math.max(...grown)).toBeLessThanOrEqual(full);
    expect(statSync(path).size).toBe(grown[grown.length - 1]);
    expect(await dm.table(snap.name)).toEqual(table);
    await snap.drop();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('refuses a snapshot on a COW device, and bad settings', async () => {
    const { guardCowFile } = await import('../../lib/snapshot/cow-guard');
    const snap = await origin.snapshot({ cow: system.addLoopDevice(2 * MiB) });
    await expect(guardCowFile(snap, { lockDir })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await expect(guardCowFile(snap, { lockDir, autoextend: { thresholdPercent: 20 } })).rejects.toThrow(/from 50/);
    await snap.drop();
  });
});

describe('a preallocated COW file', () => {
  it('is reserved whole, checked to be the file dmsnap created', async () => {
    const path = join(dir, 'reserved.cow');
    const snap = await origin.snapshot({ cowFile: { path, sizeBytes: 2 * MiB, preallocate: true } });
    expect(system.preallocated.get(path)).toBe(2 * MiB);
    await snap.drop();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('is refused when its filesystem has not the room, and nothing is created', async () => {
    const path = join(dir, 'huge.cow');
    const error = await origin.snapshot({ cowFile: { path, sizeBytes: 2 ** 50, preallocate: true } }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'ERR_DMSNAP_COW_FILE_UNSUITABLE' });
    expect((error as Error).message).toMatch(/cannot preallocate the COW file .* needs \d+ bytes and its filesystem has \d+ free/);
    expect(readdirSync(dir)).toEqual([]);
    expect(records()).toEqual([]);
  });
});
