/**
 * An in-memory stand-in for the native addon, for unit tests of the TypeScript layer.
 * It fails the way the kernel does (same errno values, through the same error factory),
 * so the shared suites run unchanged against it and against the real addon.
 */
import { makeSyscallError, type NativeBinding, type NativeBlockDeviceInfo, type NativeControl } from '../../lib/native';

export interface FakeBlockDevice extends NativeBlockDeviceInfo {}

export interface FakeSystem {
  binding: NativeBinding;
  /** Whether /dev/mapper/control "exists" (dm-mod loaded). */
  dmLoaded: boolean;
  /** Pretend the caller is not root: opening the control node and devices fails with EACCES. */
  unprivileged: boolean;
  driverVersion: [number, number, number];
  blockDevices: Map<string, FakeBlockDevice>;
  /** Other paths that exist but are not block devices. */
  otherFiles: Set<string>;
  /** Number of control descriptors currently open. */
  openControls: number;
}

const ENOENT = 2;
const EACCES = 13;
const ENOTBLK = 15;
const EBADF = 9;

export function createFakeSystem(): FakeSystem {
  const system: FakeSystem = {
    dmLoaded: true,
    unprivileged: false,
    driverVersion: [4, 47, 0],
    blockDevices: new Map(),
    otherFiles: new Set(['/dev/null', '/etc/passwd']),
    openControls: 0,
    binding: undefined as unknown as NativeBinding,
  };

  const fail = (errno: number, syscall: string, path: string, ioctl?: string): never => {
    throw makeSyscallError({ errno, syscall, path, ...(ioctl ? { ioctl } : {}) });
  };

  const openDevice = (path: string): FakeBlockDevice => {
    const device = system.blockDevices.get(path);
    if (device) {
      if (system.unprivileged) fail(EACCES, 'open', path);
      return device;
    }
    if (system.otherFiles.has(path)) fail(ENOTBLK, 'open', path);
    return fail(ENOENT, 'open', path);
  };

  system.binding = {
    async openControl(path: string): Promise<NativeControl> {
      if (!system.dmLoaded || path !== '/dev/mapper/control') fail(ENOENT, 'open', path);
      if (system.unprivileged) fail(EACCES, 'open', path);
      system.openControls++;
      let closed = false;
      return {
        path,
        get closed() {
          return closed;
        },
        async version() {
          if (closed) fail(EBADF, 'ioctl', path, 'DM_VERSION');
          return [...system.driverVersion] as [number, number, number];
        },
        close() {
          if (!closed) system.openControls--;
          closed = true;
        },
      };
    },
    async queryBlockDevice(path: string) {
      return { ...openDevice(path) };
    },
    async statBlockDevice(path: string) {
      const device = system.blockDevices.get(path);
      if (!device) fail(system.otherFiles.has(path) ? ENOTBLK : ENOENT, 'stat', path);
      return { major: device!.major, minor: device!.minor };
    },
  };
  return system;
}
