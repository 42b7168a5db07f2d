/**
 * Loaded after the framework in every VM test file: detaches its loop devices and
 * fails the file if it leaves device-mapper devices, loop devices or mounts behind.
 */
import { deviceState, detachLoopDevices, inVm, type DeviceState } from './system';

let before: DeviceState;

beforeAll(() => {
  if (!inVm) throw new Error('the VM suite runs inside the VM test bed: use "npm run test:vm"');
  before = deviceState();
});

afterAll(() => {
  detachLoopDevices();
  expect(deviceState()).toEqual(before);
});
