import { basicsSuite } from '../shared/basics.suite';
import { createFakeSystem, type FakeSystem } from '../support/fake-binding';

let system: FakeSystem;
let nextMinor = 0;
beforeEach(() => {
  system = createFakeSystem();
});

basicsSuite({
  binding: () => system.binding,
  async makeBlockDevice(sizeBytes, options) {
    const path = `/dev/loop${nextMinor}`;
    system.blockDevices.set(path, {
      sizeBytes,
      logicalSectorSize: options?.logicalSectorSize ?? 512,
      physicalSectorSize: options?.logicalSectorSize ?? 512,
      readOnly: false,
      major: 7,
      minor: nextMinor++,
    });
    return path;
  },
  notABlockDevice: '/dev/null',
});

describe('fake-only conditions', () => {
  it('maps a non-root caller to EACCES with advice', async () => {
    const { DeviceMapper } = await import('../../lib');
    system.unprivileged = true;
    await expect(DeviceMapper.open({ binding: system.binding })).rejects.toMatchObject({
      code: 'EACCES',
      message: expect.stringContaining('run as root'),
    });
  });

  it('closes the control descriptor', async () => {
    const { DeviceMapper } = await import('../../lib');
    {
      using dm = await DeviceMapper.open({ binding: system.binding });
      expect(system.openControls).toBe(1);
      await dm.version();
    }
    expect(system.openControls).toBe(0);
  });
});
