/**
 * The real native addon, loaded on the build machine (no device-mapper needed): it loads,
 * its calls are asynchronous, and its failures arrive as dmsnap errors. Set DMSNAP_ADDON
 * to test another build of it (npm run test:cmake does, for the cmake-js build).
 */
import { DeviceMapper, SyscallError, blockDeviceInfo } from '../../lib';
import { loadBinding } from '../../lib/native';
import { describeWithAddon } from '../support/addon';

describeWithAddon('native addon', () => {
  it('loads and exposes its functions', () => {
    const binding = loadBinding() as unknown as Record<string, unknown>;
    expect(typeof binding.openControl).toBe('function');
    expect(typeof binding.queryBlockDevice).toBe('function');
    expect(typeof binding.statBlockDevice).toBe('function');
  });

  it('exposes probeSignatures (libblkid is linked)', async () => {
    const binding = loadBinding();
    expect(typeof binding.probeSignatures).toBe('function');
    await expect(binding.probeSignatures('/dev/dmsnap-missing')).rejects.toMatchObject({ code: 'ENOENT', syscall: 'open' });
  });

  it('answers with a promise, never synchronously', async () => {
    const binding = loadBinding();
    let settled = false;
    const promise = binding.queryBlockDevice('/dev/null').then(
      () => (settled = true),
      () => (settled = true),
    );
    expect(settled).toBe(false);
    await promise;
    expect(settled).toBe(true);
  });

  it('reports ENOENT for a missing device as a SyscallError', async () => {
    await expect(blockDeviceInfo('/dev/dmsnap-missing')).rejects.toBeInstanceOf(SyscallError);
    await expect(blockDeviceInfo('/dev/dmsnap-missing')).rejects.toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'open' });
  });

  it('reports ENOTBLK for a character device', async () => {
    await expect(blockDeviceInfo('/dev/null')).rejects.toMatchObject({ code: 'ENOTBLK', path: '/dev/null' });
  });

  it('reports a missing control node as ENOENT', async () => {
    await expect(DeviceMapper.open({ controlPath: '/dev/dmsnap-missing-control' })).rejects.toMatchObject({
      code: 'ENOENT',
      path: '/dev/dmsnap-missing-control',
    });
  });

  it('refuses to construct a Control from JavaScript', () => {
    const binding = loadBinding() as unknown as { Control: new (...args: unknown[]) => unknown };
    expect(() => new binding.Control('/dev/mapper/control')).toThrow(/openControl/);
  });

  it('rejects non-string paths with a TypeError before any call', () => {
    const binding = loadBinding() as unknown as { queryBlockDevice(path: unknown): Promise<unknown> };
    // The addon's TypeError comes from Node's own realm, not jest's sandbox: match by name.
    expect(() => binding.queryBlockDevice(42)).toThrow(expect.objectContaining({ name: 'TypeError', message: 'path must be a string' }));
  });
});
