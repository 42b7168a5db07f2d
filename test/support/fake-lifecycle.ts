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
  let aliases = 0;
  return {
    openClient: (wrap) => {
      const { binding } = current().system;
      return DeviceMapper.open({ binding: wrap ? wrap(binding) : binding, devDir: current().devDir, udev: false });
    },
    async makeAlias(target) {
      const { system } = current();
      const path = `${current().devDir}/alias-${++aliases}`;
      const point = (to: string) => {
        const { major, minor } = system.blockDevices.get(to)!;
        system.nodes.set(path, { major, minor, mode: 0o600 });
      };
      point(target);
      return { path, repoint: point };
    },
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
