/**
 * The udev cookie of an ioctl that fails: the kernel sends no uevent, so no udev rule
 * will decrement or remove the semaphore; the client must. Against the fake binding,
 * whose udev answers every uevent that carries a cookie (the VM suite's udev-cookies
 * checks the same with the real kernel and udev).
 */
import { DeviceMapper, DmError, type NativeBinding } from '../../lib';
import { createFakeSystem, fakeNodeDirectory, type FakeSystem } from '../support/fake-binding';

let system: FakeSystem;
let nodes: { devDir: string; remove(): void };

beforeEach(() => {
  system = createFakeSystem();
  system.udevRunning = true;
  nodes = fakeNodeDirectory(system);
});

afterEach(() => nodes.remove());

function open(binding: NativeBinding = system.binding): Promise<DeviceMapper> {
  return DeviceMapper.open({ binding, devDir: nodes.devDir, udev: true, udevTimeoutMs: 2000 });
}

async function failure(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected the call to fail');
    },
    (e: unknown) => e,
  );
}

describe('udev cookies of failed ioctls', () => {
  it('a failed resume removes its cookie', async () => {
    using dm = await open();
    expect(await failure(dm.resume('nosuch'))).toMatchObject({ code: 'ENXIO' });
    expect([...system.semaphores]).toEqual([]);
  });

  it('a failed remove removes its cookie, also after retries', async () => {
    using dm = await open();
    await dm.create('held', { table: '0 8 zero' });
    const close = system.openBlockDevice('/dev/mapper/held');
    expect(await failure(dm.remove('held', { retry: false }))).toMatchObject({ code: 'EBUSY' });
    expect([...system.semaphores]).toEqual([]);
    close();
    await dm.remove('held');
    expect([...system.semaphores]).toEqual([]);
  });

  it('a failed rename removes its cookie', async () => {
    using dm = await open();
    await dm.create('a', { table: '0 8 zero' });
    await dm.create('b', { table: '0 8 zero' });
    expect(await failure(dm.rename('a', 'b'))).toBeInstanceOf(DmError);
    expect([...system.semaphores]).toEqual([]);
  });

  it('a failed member of a batch takes back only its own count', async () => {
    using dm = await open();
    await dm.create('m');
    await dm.load('m', '0 8 zero');
    const batch = dm.udevBatch();
    await dm.resume('m', { batch });
    expect(await failure(dm.resume('nosuch', { batch }))).toMatchObject({ code: 'ENXIO' });
    expect(system.semaphores.size).toBe(1);
    expect(await batch.finish()).toBe(true);
    expect([...system.semaphores]).toEqual([]);
  });

  it('a cookie whose count cannot be raised is removed, and the error is the one reported', async () => {
    const broken: NativeBinding = {
      ...system.binding,
      udevCookieAdd(semid: number, delta: 1 | -1) {
        if (delta === 1) throw Object.assign(new Error('semop failed: ERANGE'), { code: 'ERANGE' });
        system.binding.udevCookieAdd(semid, delta);
      },
    };
    using dm = await open(broken);
    await dm.create('r');
    expect(await failure(dm.resume('r'))).toMatchObject({ code: 'ERANGE' });
    expect([...system.semaphores]).toEqual([]);
  });
});
