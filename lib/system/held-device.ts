/**
 * A block device held open: every call reaches the device its path named when it was
 * opened, whatever becomes of the path. The snapshot layer holds the COW this way from its
 * first check to its zeroing.
 */
import { callNative, type NativeBinding, type NativeBlockDevice, type NativeSignature } from '../native';
import { bytes, bytesToSectors } from '../units';
import type { BlockDeviceInfo } from './block-device';
import type { DevNumber } from './stack';

export class HeldBlockDevice {
  private constructor(private readonly device: NativeBlockDevice) {}

  /** Opens `path`: O_EXCL when exclusive (EBUSY while it is mounted or held), read-write when writable. */
  static async open(binding: NativeBinding, path: string, options: { exclusive: boolean; writable: boolean }): Promise<HeldBlockDevice> {
    return new HeldBlockDevice(await callNative(() => binding.openBlockDevice(path, options.exclusive, options.writable)));
  }

  /** The path it was opened by. */
  get path(): string {
    return this.device.path;
  }

  /** Its device number, from the open descriptor. */
  get number(): DevNumber {
    return { major: this.device.major, minor: this.device.minor };
  }

  /** Size, sector sizes and read-only flag, asked of the open descriptor. */
  async info(): Promise<BlockDeviceInfo> {
    const native = await callNative(() => this.device.query());
    const sizeBytes = bytes(native.sizeBytes);
    return {
      path: this.path,
      sizeBytes,
      sizeSectors: bytesToSectors(sizeBytes),
      logicalSectorSize: native.logicalSectorSize,
      physicalSectorSize: native.physicalSectorSize,
      readOnly: native.readOnly,
      ...this.number,
    };
  }

  /** What libblkid finds on it. */
  probeSignatures(): Promise<NativeSignature[]> {
    return callNative(() => this.device.probeSignatures());
  }

  /** Up to `length` bytes at `offset`; with `direct`, past the page cache (O_DIRECT: offset and length in logical blocks). */
  read(offset: number, length: number, options: { direct?: boolean } = {}): Promise<Buffer> {
    return callNative(() => this.device.read(offset, length, options.direct === true));
  }

  /** Zeroes its first `length` bytes and syncs them (opened writable only). */
  zeroStart(length: number): Promise<void> {
    return callNative(() => this.device.zeroStart(length));
  }

  /** Writes `data` at `offset` and syncs it (opened writable only): durable once it resolves. */
  writeAt(offset: number, data: Buffer): Promise<void> {
    return callNative(() => this.device.writeAt(offset, data));
  }

  /** Releases it (and its O_EXCL claim) at once; again is a no-op. */
  close(): void {
    this.device.close();
  }
}
