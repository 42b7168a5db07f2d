/**
 * The shared lifecycle suite's environment on the fake kernel, for every unit test file
 * that runs that suite (the current kernel, an old one, …).
 */
import { basename } from 'node:path';
import { DeviceMapper } from '../../lib';
import type { LifecycleEnvironment } from '../shared/lifecycle.suite';
import type { FakeSystem } from './fake-binding';

/** `current()` gives the fake system and node directory of the running test. */
export function fakeLifecycleEnvironment(current: () => { system: FakeSystem; devDir: string }, lockDir: string): LifecycleEnvironment {
  return {
    openClient: () => DeviceMapper.open({ binding: current().system.binding, devDir: current().devDir, udev: false }),
    makeBlockDevice: async (sizeBytes) => current().system.addLoopDevice(sizeBytes),
    async writeThrough(devicePath, bytes, offsetBytes = 0) {
      const { system } = current();
      system.writeOrigin(basename(devicePath), bytes / 512, offsetBytes / 512);
      await system.settle();
    },
    async formatExt4(path) {
      current().system.signatures.set(path, [{ type: 'ext4', usage: 'filesystem', label: '', uuid: '', offset: 1080 }]);
    },
    lockDir,
    runningGuardians: () => current().system.guardians,
  };
}
