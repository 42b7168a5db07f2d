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
      // The superblock's magic, and a mount count: what the origin fingerprint reads.
      await writeSuperblock(current().system, path, 1);
    },
    async writeFilesystem(path) {
      // A read-write mount raises the mount count in the superblock.
      await writeSuperblock(current().system, path, 2);
    },
    lockDir,
    runningGuardians: () => current().system.guardians,
  };
}

/** An ext4 superblock (magic 0xEF53) with mount count `mounts`, written at byte 1024 of `path`. */
async function writeSuperblock(system: FakeSystem, path: string, mounts: number): Promise<void> {
  const sb = Buffer.alloc(1024);
  sb.writeUInt16LE(mounts, 52);
  sb.writeUInt16LE(0xef53, 56);
  const device = await system.binding.openBlockDevice(path, false, true);
  try {
    await device.writeAt(1024, sb);
  } finally {
    device.close();
  }
}
