/**
 * The shared DeviceMapper suite against the fake binding. Nodes go to a temporary
 * folder, where the fake's mknod makes a symbolic link (unprivileged tests cannot make
 * block nodes), which the client treats like udev's links.
 */
import { join } from 'node:path';
import { DeviceMapper, DmError } from '../../lib';
import { deviceMapperSuite } from '../shared/device-mapper.suite';
import { freezeSuite } from '../shared/freeze.suite';
import { createFakeSystem, fakeNodeDirectory, type FakeSystem } from '../support/fake-binding';

let system: FakeSystem;
let devDir: string;
let nodes: { devDir: string; remove(): void };

beforeEach(() => {
  system = createFakeSystem();
  nodes = fakeNodeDirectory(system);
  devDir = nodes.devDir;
});

afterEach(() => nodes.remove());

deviceMapperSuite({
  binding: () => system.binding,
  openOptions: () => ({ devDir, udev: false }),
  makeBlockDevice: async (sizeBytes) => system.addLoopDevice(sizeBytes),
});

describe('fake-only client behaviour', () => {
  it('retries a remove while the device is briefly busy', async () => {
    using dm = await DeviceMapper.open({ binding: system.binding, devDir, udev: false });
    await dm.create('busy', { table: '0 8 zero' });
    const close = system.openBlockDevice('/dev/mapper/busy');
    setTimeout(close, 300);
    const started = Date.now();
    await dm.remove('busy');
    expect(Date.now() - started).toBeGreaterThanOrEqual(200);
    expect(await dm.find('busy')).toBeUndefined();
  });

  it('gives up after about 5 s of EBUSY, or at once without retry', async () => {
    using dm = await DeviceMapper.open({ binding: system.binding, devDir, udev: false });
    await dm.create('held', { table: '0 8 zero' });
    system.openBlockDevice('/dev/mapper/held');
    const once = await dm.remove('held', { retry: false }).catch((e: unknown) => e);
    expect(once).toBeInstanceOf(DmError);
    expect(once).toMatchObject({ code: 'EBUSY' });
  });

  it('sends a udev cookie with the primary-source flags and waits for udev', async () => {
    system.udevRunning = true;
    using dm = await DeviceMapper.open({ binding: system.binding, devDir, udev: true, udevTimeoutMs: 2000 });
    await dm.create('cookie', { table: '0 8 zero' });
    const change = system.uevents.filter((u) => u.name === 'cookie' && u.action === 'change');
    expect(change).toHaveLength(1);
    expect(change[0].cookie >>> 16).toBe(0x60);
    expect(system.semaphores.size).toBe(0);
  });

  it('warns and manages the node itself when udev does not answer', async () => {
    system.udevRunning = false;
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      using dm = await DeviceMapper.open({ binding: system.binding, devDir, udev: true, udevTimeoutMs: 50 });
      await dm.create('silent', { table: '0 8 zero' });
      expect(warn).toHaveBeenCalledWith(expect.stringMatching(/udev did not confirm .*"silent"/), { code: 'DMSNAP_UDEV_TIMEOUT' });
      expect(system.nodes.has(join(devDir, 'silent'))).toBe(true);
      expect(system.semaphores.size).toBe(0);
    } finally {
      warn.mockRestore();
    }
  });
});

freezeSuite({
  binding: () => system.binding,
  openOptions: () => ({ devDir, udev: false }),
});
