/**
 * The system calls the snapshot layer makes besides device-mapper's, typed: block-device
 * queries and opens, loop devices, locks, mounts and the guardian. One System per native binding; the
 * snapshot layer gets it from its DeviceMapper client and never sees the binding itself.
 */
import { callNative, type NativeBinding } from '../native';
import { blockDeviceInfo, type BlockDeviceInfo } from './block-device';
import { Guardian } from './guardian';
import { HeldBlockDevice } from './held-device';
import { lockOrigin, type LockOptions, type OriginLock } from './lock';
import { Loops } from './loop';
import type { DevNumber } from './stack';
import type { FileIdentity } from './cow-file';

/** Whatever holds a native binding (a DeviceMapper client). */
export interface BindingOwner {
  readonly nativeBinding: NativeBinding;
}

const systems = new WeakMap<NativeBinding, System>();

export class System {
  /** Loop devices attached by dmsnap itself (no losetup): attach, status, grow, detach. */
  readonly loop: Loops;

  private constructor(private readonly binding: NativeBinding) {
    this.loop = new Loops(binding);
  }

  /** The System over the binding `owner` uses. */
  static of(owner: BindingOwner): System {
    const binding = owner.nativeBinding;
    let system = systems.get(binding);
    if (!system) systems.set(binding, (system = new System(binding)));
    return system;
  }

  /** Size, sector sizes, read-only flag and number of a block device (opened read-only). */
  blockDevice(path: string): Promise<BlockDeviceInfo> {
    return blockDeviceInfo(path, { binding: this.binding });
  }

  /** major:minor of a block device node (stat, no open). */
  deviceNumber(path: string): Promise<DevNumber> {
    return callNative(() => this.binding.statBlockDevice(path));
  }

  /** Fails with EBUSY while the device is mounted or held (O_EXCL open, closed again). */
  checkExclusive(path: string): Promise<void> {
    return callNative(() => this.binding.checkExclusive(path));
  }

  /** Opens a block device and keeps it open: every call on it reaches that one device. */
  openBlockDevice(path: string, options: { exclusive: boolean; writable: boolean }): Promise<HeldBlockDevice> {
    return HeldBlockDevice.open(this.binding, path, options);
  }

  /** Takes the lock of origin `name` (see lock.ts). */
  lock(name: string, options: LockOptions = {}): Promise<OriginLock> {
    return lockOrigin(this.binding, name, options);
  }

  /**
   * Starts the guardian of the devices with these uuids (the origin's, and for a rollback
   * the merged snapshot's, in the order they are undone), acting only under `lock`.
   */
  startGuardian(controlPath: string, uuids: string | readonly string[], lock: OriginLock): Guardian {
    return Guardian.start(this.binding, controlPath, typeof uuids === 'string' ? uuids : uuids.join(','), lock);
  }

  /** mount(2) through an O_PATH | O_NOFOLLOW descriptor of the target. */
  mount(source: string, target: string, fstype: string, flags: number, data: string): Promise<void> {
    return callNative(() => this.binding.mount(source, target, fstype, flags, data));
  }

  /** fallocate(2) of the first `length` bytes of the file `identity` names, at `path` (never through a symlink). */
  preallocateFile(path: string, identity: FileIdentity, length: number): Promise<void> {
    const inode = Number(identity.split(':')[2]);
    return callNative(() => this.binding.preallocateFile(path, inode, length));
  }

  /** umount2(2) with UMOUNT_NOFOLLOW. */
  unmount(target: string): Promise<void> {
    return callNative(() => this.binding.unmount(target, 0));
  }
}
