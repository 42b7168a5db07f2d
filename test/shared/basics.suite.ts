/**
 * Behaviour that must hold both with the fake binding (unit) and with the real addon on a
 * real kernel (VM): the suite is written once and run in both places.
 */
import { blockDeviceInfo, deviceNumber, DeviceMapper, DmsnapError, SyscallError, type NativeBinding } from '../../lib';

export interface BasicsEnvironment {
  /** The binding under test. */
  binding(): NativeBinding;
  /** Makes a block device of the given size; returns its path. Cleaned up by the environment. */
  makeBlockDevice(sizeBytes: number, options?: { logicalSectorSize?: number }): Promise<string>;
  /** A path that exists but is not a block device. */
  notABlockDevice: string;
}

export function basicsSuite(env: BasicsEnvironment): void {
  describe('DeviceMapper.version (DM_VERSION)', () => {
    it('reports interface version 4.x', async () => {
      using dm = await DeviceMapper.open({ binding: env.binding() });
      const version = await dm.version();
      expect(version.major).toBe(4);
      expect(version.minor).toBeGreaterThanOrEqual(27);
      expect(version.text).toBe(`${version.major}.${version.minor}.${version.patch}`);
    });

    it('refuses calls after close', async () => {
      const dm = await DeviceMapper.open({ binding: env.binding() });
      dm.close();
      expect(dm.closed).toBe(true);
      await expect(dm.version()).rejects.toMatchObject({ code: 'ERR_DMSNAP_CLOSED' });
    });

    it('fails with ENOENT and the modprobe hint when the control node is missing', async () => {
      const error = await DeviceMapper.open({ binding: env.binding(), controlPath: '/nonexistent/mapper/control' }).catch(
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(SyscallError);
      expect(error).toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'open', path: '/nonexistent/mapper/control' });
    });
  });

  describe('blockDeviceInfo (BLKGETSIZE64, BLKSSZGET)', () => {
    it('reads the size of a 64 MiB device', async () => {
      const path = await env.makeBlockDevice(64 * 1024 * 1024);
      const info = await blockDeviceInfo(path, { binding: env.binding() });
      expect(info.sizeBytes).toBe(67108864);
      expect(info.sizeSectors).toBe(131072);
      expect(info.logicalSectorSize).toBe(512);
      expect(info.readOnly).toBe(false);
      const number = await deviceNumber(path, { binding: env.binding() });
      expect(number).toEqual({ major: info.major, minor: info.minor });
    });

    it('reads a 4096-byte logical sector size', async () => {
      const path = await env.makeBlockDevice(8 * 1024 * 1024, { logicalSectorSize: 4096 });
      const info = await blockDeviceInfo(path, { binding: env.binding() });
      expect(info.logicalSectorSize).toBe(4096);
      expect(info.sizeBytes).toBe(8 * 1024 * 1024);
    });

    it('fails with ENOENT for a missing path', async () => {
      const error = await blockDeviceInfo('/dev/dmsnap-no-such-device', { binding: env.binding() }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(SyscallError);
      expect(error).toBeInstanceOf(DmsnapError);
      expect(error).toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'open', path: '/dev/dmsnap-no-such-device' });
      expect((error as Error).message).toContain('/dev/dmsnap-no-such-device');
    });

    it('fails with ENOTBLK for a file that is not a block device', async () => {
      const error = await blockDeviceInfo(env.notABlockDevice, { binding: env.binding() }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'ENOTBLK', errno: -15, path: env.notABlockDevice });
      expect((error as Error).message).toMatch(/not a block device/);
    });

    it('points the error stack at the caller', async () => {
      const error = (await blockDeviceInfo('/dev/dmsnap-no-such-device', { binding: env.binding() }).catch(
        (e: unknown) => e,
      )) as Error;
      expect(error.stack).toMatch(/basics\.suite/);
    });
  });
}
