/**
 * The device-mapper client: one object per open /dev/mapper/control descriptor.
 */
import { DmsnapError } from '../errors';
import { callNative, loadBinding, type NativeBinding, type NativeControl } from '../native';
import { checkPath } from '../validate';

/** The default path of the device-mapper control node. */
export const DEFAULT_CONTROL_PATH = '/dev/mapper/control';

export interface DeviceMapperOptions {
  /** The control node to open; default /dev/mapper/control. */
  controlPath?: string;
  /** The native binding to use; tests inject a fake one. */
  binding?: NativeBinding;
}

/** The kernel's device-mapper ioctl interface version, e.g. 4.47.0. */
export interface DriverVersion {
  major: number;
  minor: number;
  patch: number;
  /** "4.47.0", as `dmsetup version` prints it. */
  text: string;
}

export class DeviceMapper {
  private constructor(private readonly control: NativeControl) {}

  /**
   * Opens the control node. Fails with code 'ENOENT' when dm-mod is not loaded and
   * 'EACCES' when the caller is not root.
   */
  static async open(options: DeviceMapperOptions = {}): Promise<DeviceMapper> {
    const path = options.controlPath ?? DEFAULT_CONTROL_PATH;
    checkPath(path, 'controlPath');
    const binding = options.binding ?? loadBinding();
    const control = await callNative(() => binding.openControl(path));
    return new DeviceMapper(control);
  }

  /** The path of the control node this client uses. */
  get controlPath(): string {
    return this.control.path;
  }

  get closed(): boolean {
    return this.control.closed;
  }

  /** DM_VERSION: the kernel's device-mapper interface version. */
  async version(): Promise<DriverVersion> {
    const [major, minor, patch] = await this.call(() => this.control.version());
    return { major, minor, patch, text: `${major}.${minor}.${patch}` };
  }

  /** Closes the control node; calls already in flight still complete. */
  close(): void {
    this.control.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  private call<T>(op: () => Promise<T>): Promise<T> {
    if (this.control.closed) {
      throw new DmsnapError(`the device-mapper client for ${this.control.path} is closed`, 'ERR_DMSNAP_CLOSED');
    }
    return callNative(op);
  }
}
