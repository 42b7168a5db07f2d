/**
 * An in-memory stand-in for the native addon, for unit tests of the TypeScript layer.
 * It models the kernel's device-mapper (drivers/md/dm-ioctl.c, dm-table.c, dm-snap.c as
 * of Linux 6.1) and fails the way the kernel does (same errno values, through the same
 * error factory), so the shared suites run unchanged against it and against the real
 * addon in the VM. It needs no compiled addon. The model lives in ./fake/, one concern
 * a file: devices.ts and table-ioctls.ts (the dm device state machine), tables.ts,
 * snapshot.ts, exceptions.ts and targets.ts (targets and exception stores), paths.ts,
 * opens.ts and block-devices.ts (block devices), loop.ts (loop-control and the loop ioctls), events.ts and udev.ts, host.ts (mounts,
 * guardian, locks), control.ts and binding.ts (the front end the addon's shape is made of).
 */
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fakeBinding } from './fake/binding';
import { DM_CONSTANTS, ENODEV } from './fake/constants';
import { writeOrigin, writeSnapshot, zeroDevice } from './fake/exceptions';
import { newState } from './fake/model';
import { openForTest } from './fake/opens';
import { addFile } from './fake/loop';
import { addLoopDevice } from './fake/paths';
import type { FakeSystem } from './fake/system';

export type {
  FakeBlockDevice,
  FakeGuardian,
  FakeMappedDevice,
  FakeMessageHandler,
  FakeSystem,
  FakeTable,
  FakeTableTarget,
  FakeUevent,
} from './fake/system';

export function createFakeSystem(): FakeSystem {
  const s = newState();
  const system: FakeSystem = {
    dmLoaded: true,
    unprivileged: false,
    driverVersion: [4, 47, 0],
    blockDevices: new Map(),
    otherFiles: new Set(['/dev/null', '/etc/passwd']),
    files: new Map(),
    addFile: (path, sizeBytes, kind) => addFile(s, path, sizeBytes, kind),
    loopRaces: 0,
    loopDirectIo: false,
    signatures: new Map(),
    openControls: 0,
    binding: undefined as unknown as FakeSystem['binding'],
    constants: DM_CONSTANTS,
    devices: s.mds,
    uevents: [],
    udevRunning: false,
    semaphores: new Map(),
    nodes: new Map(),
    messageHandlers: new Map(),
    tableDeviceLookupErrno: ENODEV,
    get globalEventNr() {
      return s.globalEventNr;
    },
    addLoopDevice: (sizeBytes, options) => addLoopDevice(s, sizeBytes, options),
    writeOrigin: (nameOrPath, sectors, startSector) => writeOrigin(s, nameOrPath, sectors, startSector),
    writeSnapshot: (nameOrPath, sectors, startSector) => writeSnapshot(s, nameOrPath, sectors, startSector),
    openBlockDevice: (nameOrPath, options) => openForTest(s, nameOrPath, options),
    zeroDevice: (nameOrPath) => zeroDevice(s, nameOrPath),
    async settle() {
      for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
    },
    mounts: new Map(),
    zeroed: new Map(),
    preallocated: new Map(),
    guardians: 0,
    guardianLog: [],
    exclusiveOpensDuringSpawn: 0,
  };
  s.system = system;
  system.binding = fakeBinding(s);
  return system;
}

/**
 * A temporary folder to stand in for /dev/mapper: the fake's mknod makes a symbolic link
 * there (unprivileged tests cannot make block nodes), which the client treats as it
 * treats udev's links. Returns the folder and a function that removes it.
 */
export function fakeNodeDirectory(system: FakeSystem): { devDir: string; remove(): void } {
  const devDir = mkdtempSync(join(tmpdir(), 'dmsnap-nodes-'));
  const makeBlockNode = system.binding.makeBlockNode.bind(system.binding);
  system.binding.makeBlockNode = async (path, major, minor, mode) => {
    // The client unlinks nodes with fs; the fake's record of them follows the disk.
    system.nodes.delete(path);
    await makeBlockNode(path, major, minor, mode);
    symlinkSync(`/dev/fake-${major}-${minor}`, path);
  };
  return { devDir, remove: () => rmSync(devDir, { recursive: true, force: true }) };
}
