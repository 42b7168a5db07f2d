/**
 * The shared loop-device suite against the fake kernel, and what only the fake can stage:
 * another process taking the free loop number first, a filesystem with direct I/O.
 */
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceMapper } from '../../lib';
import { loadBinding } from '../../lib/native';
import { Loops } from '../../lib/system/loop';
import { System } from '../../lib/system/system';
import { loopSuite } from '../shared/loop.suite';
import { describeWithAddon } from '../support/addon';
import { createFakeSystem, fakeNodeDirectory, type FakeSystem } from '../support/fake-binding';
import { FAKE_FILES_DEV } from '../support/fake/constants';

let system: FakeSystem;
let nodes: { devDir: string; remove(): void };
let files = 0;

beforeEach(() => {
  system = createFakeSystem();
  nodes = fakeNodeDirectory(system);
});

afterEach(() => nodes.remove());

loopSuite({
  openClient: () => DeviceMapper.open({ binding: system.binding, devDir: nodes.devDir, udev: false }),
  makeFile: async (sizeBytes) => {
    const path = `/srv/fake/file${files++}.img`;
    system.addFile(path, sizeBytes);
    return path;
  },
  makeSymlink: async () => {
    const path = `/srv/fake/link${files++}`;
    system.addFile(path, 0, 'symlink');
    return path;
  },
  makeDirectory: async () => {
    const path = `/srv/fake/dir${files++}`;
    system.addFile(path, 0, 'directory');
    return path;
  },
  missingPath: () => `/srv/fake/missing${files++}`,
  growFile: async (path, sizeBytes) => void (system.files.get(path)!.sizeBytes = sizeBytes),
  fileIdentity: (path) => ({ ...FAKE_FILES_DEV, inode: system.files.get(path)!.inode }),
});

describe('loop devices (fake kernel)', () => {
  const attachOnce = async () => {
    system.addFile('/srv/fake/cow.img', 1024 * 1024);
    const dm = await DeviceMapper.open({ binding: system.binding, devDir: nodes.devDir, udev: false });
    try {
      return await System.of(dm).loop.attach('/srv/fake/cow.img', { tag: 'DMSNAP-race-cow' });
    } finally {
      dm.close();
    }
  };

  it('takes the next free number when another process binds the one it was given first', async () => {
    system.loopRaces = 2;
    const loop = await attachOnce();
    // loop0 and loop1 went to the other process; LOOP_CONFIGURE succeeded on loop2.
    expect(loop.device).toBe('/dev/loop2');
    expect(system.loopRaces).toBe(0);
    loop.release();
  });

  it('gives up with EBUSY after a few numbers taken in a row', async () => {
    system.loopRaces = 100;
    await expect(attachOnce()).rejects.toMatchObject({ code: 'EBUSY', syscall: 'ioctl', message: expect.stringContaining('LOOP_CONFIGURE on /dev/loop7') });
    expect(system.loopRaces).toBe(92);
  });

  it('reports direct I/O where the backing filesystem takes it', async () => {
    system.loopDirectIo = true;
    const loop = await attachOnce();
    expect(loop.directIo).toBe(true);
    loop.release();
  });

  it('needs root for /dev/loop-control', async () => {
    system.addFile('/srv/fake/cow.img', 1024 * 1024);
    system.unprivileged = true;
    await expect(new Loops(system.binding).attach('/srv/fake/cow.img', { tag: 'DMSNAP-x-cow' })).rejects.toMatchObject({ code: 'EACCES', path: '/dev/loop-control' });
  });
});

// Every call here fails at the backing file's open, before /dev/loop-control: no loop device is touched.
describeWithAddon('the real addon\'s loop calls, on the build machine', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dmsnap-loop-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const loops = () => new Loops(loadBinding());

  it('opens the file with O_NOFOLLOW: a symlink is refused (ELOOP), even one to nothing', async () => {
    const link = join(dir, 'dangling');
    symlinkSync(join(dir, 'nowhere'), link);
    await expect(loops().attach(link, { tag: 'DMSNAP-t-cow' })).rejects.toMatchObject({ code: 'ELOOP', syscall: 'open', path: link });
  });

  it('refuses a missing file (ENOENT) and a directory (EISDIR) by their open', async () => {
    await expect(loops().attach(join(dir, 'missing'), { tag: 'DMSNAP-t-cow' })).rejects.toMatchObject({ code: 'ENOENT', syscall: 'open' });
    await expect(loops().attach(dir, { tag: 'DMSNAP-t-cow' })).rejects.toMatchObject({ code: 'EISDIR', syscall: 'open', path: dir });
  });

  it('checks the types of its arguments', () => {
    const binding = loadBinding() as unknown as Record<string, (...args: unknown[]) => unknown>;
    expect(() => binding.loopAttach!(join(dir, 'missing'), 'tag', 'yes')).toThrow('directIo must be a boolean');
    expect(() => binding.loopStatus!(7)).toThrow('device must be a string');
  });
});
