/**
 * The shared lifecycle suite against the fake binding.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceMapper } from '../../lib';
import { lifecycleSuite } from '../shared/lifecycle.suite';
import { fakeLifecycleEnvironment } from '../support/fake-lifecycle';
import { createFakeSystem, fakeNodeDirectory, type FakeSystem } from '../support/fake-binding';

let system: FakeSystem;
let devDir: string;
let nodes: { devDir: string; remove(): void };
const lockDir = mkdtempSync(join(tmpdir(), 'dmsnap-locks-'));

beforeEach(() => {
  system = createFakeSystem();
  nodes = fakeNodeDirectory(system);
  devDir = nodes.devDir;
});

afterEach(() => nodes.remove());
afterAll(() => rmSync(lockDir, { recursive: true, force: true }));

lifecycleSuite(fakeLifecycleEnvironment(() => ({ system, devDir: devDir }), lockDir));

describe('reusing a COW (fake kernel)', () => {
  it('ignores signatures in an old snapshot\'s copied blocks, but not in its header chunks', async () => {
    const dm = await DeviceMapper.open({ binding: system.binding, devDir, udev: false });
    const { prepare } = await import('../../lib');
    const origin = await prepare(system.addLoopDevice(8 * 1024 * 1024), { dm, lockDir, name: 'reuse' });
    const cow = system.addLoopDevice(2 * 1024 * 1024);
    await (await origin.snapshot({ cow })).drop();
    // blkid finds the origin's old data in the COW's data area: past dmsnap's label (64 KiB),
    // the store's header chunk and first metadata chunk (32 sectors each), from 96 KiB on.
    system.signatures.set(cow, [{ type: 'xfs_external_log', usage: 'other', label: '', uuid: '', offset: 98304 + 16384 }]);
    await (await origin.snapshot({ cow })).drop();
    // In the store's first metadata chunk it is no copied block: refused.
    system.signatures.set(cow, [{ type: 'xfs_external_log', usage: 'other', label: '', uuid: '', offset: 65536 + 16384 + 512 }]);
    await expect(origin.snapshot({ cow })).rejects.toMatchObject({ code: 'ERR_DMSNAP_COW_HAS_DATA' });
    system.signatures.set(cow, [{ type: 'xfs_external_log', usage: 'other', label: '', uuid: '', offset: 98304 + 16384 }]);
    await (await origin.snapshot({ cow })).drop();
    // An LVM label in the header chunk: the device was reused for something else.
    system.signatures.set(cow, [{ type: 'LVM2_member', usage: 'raid', label: '', uuid: '', offset: 536 }]);
    await expect(origin.snapshot({ cow })).rejects.toMatchObject({ code: 'ERR_DMSNAP_COW_HAS_DATA' });
    dm.close();
  });
});

describe('the guardian and the COW (fake kernel)', () => {
  it('opens the COW exclusively only once the guardian is spawned', async () => {
    // A child being spawned copies the descriptors open at that instant: an exclusive open
    // of the COW among them would hold the COW, and the kernel answers EBUSY to the next.
    const dm = await DeviceMapper.open({ binding: system.binding, devDir, udev: false });
    const { prepare } = await import('../../lib');
    const origin = await prepare(system.addLoopDevice(8 * 1024 * 1024), { dm, lockDir, name: 'spawn' });
    const snap = await origin.snapshot({ cow: system.addLoopDevice(2 * 1024 * 1024) });
    expect(system.exclusiveOpensDuringSpawn).toBe(0);
    await snap.drop();
    expect(system.exclusiveOpensDuringSpawn).toBe(0);
    dm.close();
  });

  it('writes nothing to the COW when the guardian cannot start', async () => {
    const dm = await DeviceMapper.open({ binding: system.binding, devDir, udev: false });
    const { prepare } = await import('../../lib');
    const origin = await prepare(system.addLoopDevice(8 * 1024 * 1024), { dm, lockDir, name: 'noguard' });
    const cow = system.addLoopDevice(2 * 1024 * 1024);
    const saved = process.env.DMSNAP_GUARDIAN;
    process.env.DMSNAP_GUARDIAN = '/nonexistent/dmsnap-guardian';
    try {
      await expect(origin.snapshot({ cow })).rejects.toMatchObject({ code: 'ERR_DMSNAP_GUARDIAN' });
    } finally {
      if (saved === undefined) delete process.env.DMSNAP_GUARDIAN;
      else process.env.DMSNAP_GUARDIAN = saved;
    }
    expect(system.zeroed.has(cow)).toBe(false);
    dm.close();
  });

  it('starts one guardian per freeze, for the origin by uuid and under the lock it holds, and finishes it once', async () => {
    const dm = await DeviceMapper.open({ binding: system.binding, devDir, udev: false });
    const { prepare } = await import('../../lib');
    const origin = await prepare(system.addLoopDevice(8 * 1024 * 1024), { dm, lockDir, name: 'guarded' });
    const snap = await origin.snapshot({ cow: system.addLoopDevice(2 * 1024 * 1024) });
    await snap.drop();
    const lockPath = join(lockDir, 'guarded.lock');
    const { dev, ino } = statSync(lockPath);
    // One for the snapshot's freeze, one for the drop's swap back to linear.
    expect(system.guardianLog).toEqual([
      expect.objectContaining({ originUuid: origin.originUuid, lockPath, lockId: `${dev}:${ino}`, finished: 'done' }),
      expect.objectContaining({ originUuid: origin.originUuid, lockPath, lockId: `${dev}:${ino}`, finished: 'done' }),
    ]);
    expect(system.guardians).toBe(0);
    dm.close();
  });

  it('finishes a guardian once however often it is asked', async () => {
    const { Guardian } = await import('../../lib/system/guardian');
    const lock = Object.assign(() => undefined, { path: join(lockDir, 'x.lock'), id: '1:2' });
    const guardian = Guardian.start(system.binding, '/dev/mapper/control', 'DMSNAP-x-origin', lock);
    await guardian.ready;
    await Promise.all([guardian.finish(), guardian.finish()]);
    await guardian.finish();
    expect(system.guardianLog.map((g) => g.finished)).toEqual(['done']);
    // The binding itself refuses a second finish, as waitpid would.
    await expect(system.binding.finishGuardian(system.guardianLog[0]!.pid, 0, true)).rejects.toMatchObject({ code: 'ECHILD' });
  });
});

describe('another process at work (fake kernel)', () => {
  it('lists the snapshots that remain when another process drops one between the list and its table', async () => {
    const plain = await DeviceMapper.open({ binding: system.binding, devDir, udev: false });
    const { prepare, openOrigin } = await import('../../lib');
    const origin = await prepare(system.addLoopDevice(8 * 1024 * 1024), { dm: plain, lockDir, name: 'race' });
    const first = await origin.snapshot({ cow: system.addLoopDevice(2 * 1024 * 1024), name: 'race-1' });
    const second = await origin.snapshot({ cow: system.addLoopDevice(2 * 1024 * 1024), name: 'race-2' });
    // Right after DM_LIST_DEVICES answers, the other process removes race-2.
    let dropNext = false;
    const binding = new Proxy(system.binding, {
      get(object, key, receiver) {
        const value = Reflect.get(object, key, receiver) as unknown;
        if (key !== 'openControl' || typeof value !== 'function') return value;
        return async (path: string) => {
          const control = await (value as typeof system.binding.openControl).call(object, path);
          return new Proxy(control, {
            get(target, name, r) {
              const member = Reflect.get(target, name, r) as unknown;
              if (name !== 'listDevices' || typeof member !== 'function') return typeof member === 'function' ? member.bind(target) : member;
              return async () => {
                const listed = await (member as () => Promise<unknown>).call(target);
                if (dropNext) {
                  dropNext = false;
                  await second.drop();
                }
                return listed;
              };
            },
          });
        };
      },
    });
    const racing = await DeviceMapper.open({ binding, devDir, udev: false });
    const seen = await openOrigin('race', { dm: racing, lockDir });
    dropNext = true;
    expect((await seen.snapshots()).map((s) => s.name)).toEqual(['race-1']);
    await first.drop();
    racing.close();
    plain.close();
  });
});
