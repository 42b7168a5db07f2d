/**
 * The lifecycle commands against the fake kernel: what prepare, snapshot, status, ls, drop
 * and release print, in which stream, and with which exit code. The same procedure on a
 * real kernel, with filesystems, mounts and signals, is test/vm/cli-lifecycle.test.ts.
 */
import { fakeCliFixture } from '../support/fake-cli';

const MiB = 1024 * 1024;
const fx = fakeCliFixture('dmsnap-cli-locks-');
const cli = fx.cli;

/** The live table of every device, as text: what the kernel holds. */
function tables(): Record<string, string> {
  return Object.fromEntries([...fx.system.devices.values()].map((d) => [d.name, (d.live?.targets ?? []).map((t) => `${t.type} ${t.params}`).join('\n')]));
}

describe('prepare, snapshot, status, ls, drop, release (fake kernel)', () => {
  it('runs the procedure with data on stdout only', async () => {
    const disk = fx.system.addLoopDevice(32 * MiB);
    const cow = fx.system.addLoopDevice(8 * MiB);
    const node = `${fx.devDir}/md2`;
    expect(await cli(['prepare', disk, '--name', 'md2'])).toEqual({ status: 0, stdout: `${node}\n`, stderr: '' });
    expect(await cli(['prepare', disk, '--name', 'md2'])).toEqual({ status: 0, stdout: `${node}\n`, stderr: '' });

    const taken = await cli(['snapshot', 'md2', '--cow', cow, '--chunk-size', '16k']);
    expect(taken).toMatchObject({ status: 0, stdout: `${node}-snap\n`, stderr: expect.stringMatching(/^dmsnap: md2 was frozen for \d+\.\d ms\n$/) });
    expect(await cli(['snapshot', 'md2', '--cow', cow, '--snapshot-name', 'md2-c'])).toMatchObject({ status: 4, stdout: '', stderr: expect.stringMatching(/in use/) });
    const cow2 = fx.system.addLoopDevice(4 * MiB);
    expect(await cli(['snapshot', 'md2', '--cow', cow2, '-q', '--snapshot-name', 'md2-b', '--transient', '--chunk-size', '8'])).toMatchObject({ status: 0, stderr: '' });
    expect(tables()['md2']).toMatch(/^snapshot-origin /);

    const status = JSON.parse((await cli(['status', 'md2', '--json'])).stdout);
    expect(status.origins).toEqual([
      expect.objectContaining({ name: 'md2', device: node, backing: disk, sizeBytes: 32 * MiB, suspended: false, snapshots: expect.any(Array) }),
    ]);
    const [transient, persistent] = status.origins[0].snapshots;
    expect(transient).toMatchObject({ name: 'md2-b', persistent: false, chunkSectors: 8, state: 'active', metadataSectors: 0 });
    expect(Object.keys(persistent).sort()).toEqual(
      ['allocatedSectors', 'chunkSectors', 'cow', 'cowFile', 'device', 'metadataSectors', 'name', 'persistent', 'state', 'totalSectors', 'trackingSince', 'usedPercent'].sort(),
    );
    expect(persistent).toMatchObject({ name: 'md2-snap', cow, cowFile: null, trackingSince: null, device: `${node}-snap`, persistent: true, chunkSectors: 32, totalSectors: 16384 - 128 });

    const human = (await cli(['status', 'md2'])).stdout.split('\n');
    expect(human[0]).toBe(`md2  live  ${node}  backing ${disk}  32.0 MiB  2 snapshot(s)`);
    expect(human[2]).toMatch(/^ {2}md2-snap {2}active {2}\d+\/16256 sectors \[[#.]{20}\] \d+\.\d% {2}cow \/dev\/loop1 {2}chunk 32 {2}persistent$/);
    const ls = (await cli(['ls'])).stdout.split('\n');
    expect(ls[0]).toMatch(/^NAME +TYPE +DEVICE +BACKING\/COW +SIZE$/);
    expect(ls.filter((l) => l.startsWith('md2'))).toHaveLength(3);

    expect(await cli(['drop', 'md2', '--snapshot-name', 'md2-b'])).toMatchObject({ status: 0, stdout: '' });
    expect(tables()['md2']).toMatch(/^snapshot-origin /);
    expect((await cli(['drop', 'md2'])).status).toBe(0);
    expect(tables()['md2']).toBe(tables()['md2-real']);
    expect(await cli(['release', 'md2'])).toMatchObject({ status: 0, stdout: '' });
    expect(fx.system.devices.size).toBe(0);
  });

  it('uses exit 2 for usage errors and 1 for failures, and a usage error changes nothing', async () => {
    const disk = fx.system.addLoopDevice(16 * MiB);
    const cow = fx.system.addLoopDevice(4 * MiB);
    await cli(['prepare', disk, '--name', 'md3']);
    const before = tables();
    expect(await cli(['snapshot', 'md3'])).toMatchObject({ status: 2, stdout: '' });
    expect(await cli(['snapshot', 'md3', '--cow', cow, '--chunk-size', '12k'])).toMatchObject({ status: 2, stderr: expect.stringMatching(/power of two/) });
    expect((await cli(['snapshot', 'md3', '--cow', cow, '--chunk-size', '3furlongs'])).status).toBe(2);
    expect(await cli(['snapshot', 'nosuchorigin', '--cow', cow])).toMatchObject({ status: 1, stderr: expect.stringMatching(/dmsnap prepare/) });
    expect(await cli(['prepare', '/dev/null'])).toMatchObject({ status: 1, stderr: expect.stringMatching(/not a block device/) });
    expect(tables()).toEqual(before);
  });

  it.each(['prepare', 'snapshot', 'status', 'ls', 'drop', 'release', 'backup', 'image', 'recover', 'monitor', 'apply', 'changes'])('%s --help prints usage and an example on stdout', async (command) => {
    const help = await cli([command, '--help']);
    expect(help).toMatchObject({ status: 0, stderr: '' });
    expect(help.stdout).toMatch(new RegExp(`^Usage: dmsnap ${command} `));
    expect(help.stdout).toMatch(/Example/);
  });
});
