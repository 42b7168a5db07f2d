/**
 * `dmsnap detach` and `dmsnap prepare --attach` against the fake kernel: output, exit
 * codes, usage errors before any side effect, and the origin found by its device. What
 * the kernel does across a real reboot is proven in test/vm/reboot/.
 */
import { fakeCliFixture } from '../support/fake-cli';

const MiB = 1024 * 1024;
const fx = fakeCliFixture('dmsnap-reattach-locks-');
const cli = fx.cli;

/** An ext4 superblock (magic, mount count) written on the fake device. */
async function ext4(path: string, mounts = 1): Promise<void> {
  const sb = Buffer.alloc(1024);
  sb.writeUInt16LE(mounts, 52);
  sb.writeUInt16LE(0xef53, 56);
  const device = await fx.system.binding.openBlockDevice(path, false, true);
  await device.writeAt(1024, sb);
  device.close();
}

describe('dmsnap detach and prepare --attach (fake kernel)', () => {
  it('detaches by name or device, printing what it kept; prepare --attach brings it back and says so', async () => {
    const disk = fx.system.addLoopDevice(32 * MiB);
    await ext4(disk);
    const cow = fx.system.addLoopDevice(8 * MiB);
    expect((await cli(['prepare', disk, '--name', 'ra'])).status).toBe(0);
    expect((await cli(['snapshot', 'ra', '--cow', cow, '-q'])).status).toBe(0);
    expect(await cli(['detach', disk])).toEqual({ status: 0, stdout: `ra-snap ${cow} active\n`, stderr: '' });
    expect([...fx.system.devices.keys()].filter((n) => n.startsWith('ra'))).toEqual([]);
    expect(await cli(['prepare', disk, '--name', 'ra', '--attach', cow])).toEqual({
      status: 0,
      stdout: expect.stringMatching(/\/ra\n$/),
      stderr: `dmsnap prepare: attached snapshot ra-snap from ${cow}\n`,
    });
  });

  it('prepares the origin even when every COW is refused, and says why on stderr, with -q too', async () => {
    const disk = fx.system.addLoopDevice(32 * MiB);
    await ext4(disk);
    const cow = fx.system.addLoopDevice(8 * MiB);
    expect((await cli(['prepare', disk, '--name', 'rb'])).status).toBe(0);
    expect((await cli(['snapshot', 'rb', '--cow', cow, '-q'])).status).toBe(0);
    expect((await cli(['detach', 'rb', '-q'])).status).toBe(0);
    await ext4(disk, 2);
    const result = await cli(['prepare', disk, '--name', 'rb', '--attach', cow, '-q']);
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/\/rb\n$/);
    expect(result.stderr).toBe(`dmsnap prepare: refused the COW ${cow}: the origin was written since snapshot rb-snap was detached (its ext4 fingerprint changed): the snapshot would read wrong; it was left as it is\n`);
    expect(fx.system.devices.has('rb-snap')).toBe(false);
  });

  it('exits 4 while the origin is mounted or open, 1 for a device no origin wraps, 2 without an argument', async () => {
    const disk = fx.system.addLoopDevice(32 * MiB);
    await ext4(disk);
    expect((await cli(['prepare', disk, '--name', 'rc'])).status).toBe(0);
    const held = await fx.system.binding.openBlockDevice((await cli(['prepare', disk, '--name', 'rc'])).stdout.trim(), false, false);
    try {
      expect(await cli(['detach', 'rc'])).toMatchObject({ status: 4, stdout: '', stderr: expect.stringMatching(/mounted or open/) });
    } finally {
      held.close();
    }
    expect(await cli(['detach', fx.system.addLoopDevice(MiB)])).toMatchObject({ status: 1, stderr: expect.stringMatching(/is not prepared/) });
    expect(await cli(['detach'])).toMatchObject({ status: 2 });
    expect((await cli(['detach', 'rc'])).status).toBe(0);
  });

  it('rollback --at-boot: recorded while mounted, shown by status, cancelled, kept by detach and started by prepare --attach', async () => {
    const disk = fx.system.addLoopDevice(32 * MiB);
    await ext4(disk);
    const cow = fx.system.addLoopDevice(8 * MiB);
    const device = (await cli(['prepare', disk, '--name', 'rd'])).stdout.trim();
    expect((await cli(['snapshot', 'rd', '--cow', cow, '-q'])).status).toBe(0);
    expect(await cli(['rollback', 'rd', '--at-boot', '--wait'])).toMatchObject({ status: 2, stderr: expect.stringMatching(/exclude each other/) });
    expect(await cli(['rollback', 'rd', '--cancel', '--snapshot-name', 'rd-snap'])).toMatchObject({ status: 2 });
    const held = await fx.system.binding.openBlockDevice(device, false, false);
    try {
      expect(await cli(['rollback', 'rd'])).toMatchObject({ status: 4 });
      expect(await cli(['rollback', 'rd', '--at-boot'])).toEqual({ status: 0, stdout: '', stderr: expect.stringMatching(/^dmsnap: rd is rolled back to rd-snap at the next "dmsnap prepare --attach"/) });
    } finally {
      held.close();
    }
    expect((await cli(['status', 'rd'])).stdout).toMatch(/^rd .* rollback to rd-snap at the next boot\n/);
    expect(await cli(['rollback', 'rd', '--cancel', '-q'])).toEqual({ status: 0, stdout: '', stderr: '' });
    expect((await cli(['status', 'rd'])).stdout).not.toMatch(/next boot/);
    expect(await cli(['rollback', 'rd', '--cancel'])).toMatchObject({ status: 1, stderr: 'dmsnap rollback: rd has no rollback recorded for the next boot\n' });
    expect((await cli(['rollback', 'rd', '--at-boot', '-q'])).status).toBe(0);
    expect(await cli(['detach', 'rd'])).toEqual({ status: 0, stdout: `rd-snap ${cow} active\n`, stderr: 'dmsnap detach: the next "dmsnap prepare --attach" rolls rd back to rd-snap (recorded with --at-boot)\n' });
    expect(await cli(['prepare', disk, '--name', 'rd', '--attach', cow])).toMatchObject({
      status: 0,
      stderr: `dmsnap prepare: started the rollback recorded with --at-boot to snapshot rd-snap from ${cow}\n`,
    });
    expect(fx.system.devices.get('rd')).toBeDefined();
    expect(await cli(['rollback', 'rd', '--wait', '-q'])).toMatchObject({ status: 0 });
    expect(fx.system.devices.has('rd-snap')).toBe(false);
  });
});
