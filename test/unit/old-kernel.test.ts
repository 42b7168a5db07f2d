/**
 * The shared suites against a fake kernel with Linux 5.10's device-mapper interface
 * (4.43.0), whose DM_LIST_DEVICES reports event numbers but no uuids: the client asks
 * each device for its uuid, and the lifecycle finds its devices all the same.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deviceMapperSuite } from '../shared/device-mapper.suite';
import { lifecycleSuite } from '../shared/lifecycle.suite';
import { fakeLifecycleEnvironment } from '../support/fake-lifecycle';
import { nativeContractSuite } from '../shared/native-contract.suite';
import { createFakeSystem, fakeNodeDirectory, type FakeSystem } from '../support/fake-binding';

let system: FakeSystem;
let nodes: { devDir: string; remove(): void };
const lockDir = mkdtempSync(join(tmpdir(), 'dmsnap-locks-'));

beforeEach(() => {
  system = createFakeSystem();
  system.driverVersion = [4, 43, 0];
  nodes = fakeNodeDirectory(system);
});

afterEach(() => nodes.remove());
afterAll(() => rmSync(lockDir, { recursive: true, force: true }));

it('lists no uuids, as the 5.10 kernel does', async () => {
  const control = await system.binding.openControl('/dev/mapper/control');
  await control.create('tagged', 'some-uuid', 0);
  expect(await control.listDevices()).toEqual([{ name: 'tagged', major: 254, minor: 0, eventNr: 0 }]);
  control.close();
});

nativeContractSuite({
  binding: () => system.binding,
  makeBlockDevice: async (sizeBytes) => system.addLoopDevice(sizeBytes),
  controlPath: '/dev/mapper/control',
});

deviceMapperSuite({
  binding: () => system.binding,
  openOptions: () => ({ devDir: nodes.devDir, udev: false }),
  makeBlockDevice: async (sizeBytes) => system.addLoopDevice(sizeBytes),
});

lifecycleSuite(fakeLifecycleEnvironment(() => ({ system, devDir: nodes.devDir }), lockDir));
