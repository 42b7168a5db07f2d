/**
 * `dmsnap dm …` against the fake kernel: the command line, its output formats and exit
 * codes. What only a real kernel can show (its table text, events, udev's nodes, keys
 * compared with dmsetup's, the flags of the ioctls) is in test/vm/cli-dm.test.ts.
 */
import { createFakeSystem, fakeNodeDirectory, type FakeSystem } from '../support/fake-binding';
import { runFakeCli } from '../support/fake-cli';

let system: FakeSystem;
let nodes: ReturnType<typeof fakeNodeDirectory>;

beforeEach(() => {
  system = createFakeSystem();
  nodes = fakeNodeDirectory(system);
});
afterEach(() => nodes.remove());

function dm(argv: string[], input = '') {
  return runFakeCli(system, ['dm', ...argv], { devDir: nodes.devDir, udev: false }, input);
}

describe('dmsnap dm on the fake kernel', () => {
  it('creates from a table on stdin and prints it back with MAJOR:MINOR', async () => {
    const loop = system.addLoopDevice(4 * 1024 * 1024);
    const { major, minor } = system.blockDevices.get(loop)!;
    expect(await dm(['create', 'stdin'], `0 8192 linear ${loop} 0\n`)).toEqual({ status: 0, stdout: '', stderr: '' });
    expect((await dm(['table', 'stdin'])).stdout).toBe(`0 8192 linear ${major}:${minor} 0\n`);
  });

  it('loads, suspends, resumes, renames and removes', async () => {
    expect((await dm(['create', 'cycle', '--notable'])).status).toBe(0);
    expect((await dm(['info', 'cycle'])).stdout).toMatch(/^Tables present: {4}None$/m);
    expect((await dm(['load', 'cycle'], '0 16 zero\n')).status).toBe(0);
    expect((await dm(['table', 'cycle', '--inactive'])).stdout).toBe('0 16 zero \n');
    expect((await dm(['info', 'cycle'])).stdout).toMatch(/^Tables present: {4}INACTIVE$/m);
    expect((await dm(['resume', 'cycle'])).status).toBe(0);
    expect((await dm(['suspend', 'cycle'])).status).toBe(0);
    expect((await dm(['info', 'cycle'])).stdout).toMatch(/^State: {13}SUSPENDED$/m);
    expect((await dm(['resume', 'cycle'])).status).toBe(0);
    expect((await dm(['info', 'cycle'])).stdout).toMatch(/^State: {13}ACTIVE$/m);
    expect((await dm(['rename', 'cycle', 'cycle-b'])).status).toBe(0);
    expect((await dm(['rename', 'cycle-b', '--setuuid', 'CYCLE-UUID'])).status).toBe(0);
    const json = JSON.parse((await dm(['info', 'cycle-b', '--json'])).stdout);
    expect(json.devices[0]).toMatchObject({ name: 'cycle-b', uuid: 'CYCLE-UUID', eventNr: 2, targetCount: 1, suspended: false, liveTable: true });
    expect(typeof json.devices[0].major).toBe('number');
    expect((await dm(['remove', 'cycle-b'])).status).toBe(0);
    expect(await dm(['info', 'cycle-b'])).toMatchObject({ status: 1, stdout: '' });
    expect([...system.devices.values()]).toEqual([]);
  });

  it('prints real JSON types for ls, status and deps', async () => {
    const loop = system.addLoopDevice(1024 * 1024);
    await dm(['create', 'json', '--uuid', 'json-id', '--table', `0 2048 linear ${loop} 0`]);
    const ls = JSON.parse((await dm(['ls', '--json'])).stdout);
    expect(ls.devices).toEqual([{ name: 'json', major: expect.any(Number), minor: expect.any(Number), uuid: 'json-id', eventNr: 0 }]);
    const status = JSON.parse((await dm(['status', 'json', '--json'])).stdout);
    expect(status).toEqual({ devices: [{ name: 'json', targets: [{ start: 0, length: 2048, type: 'linear', params: '' }] }] });
    const deps = JSON.parse((await dm(['deps', 'json', '--json'])).stdout);
    const { major, minor } = system.blockDevices.get(loop)!;
    expect(deps.devices).toEqual([{ major, minor }]);
  });

  it('explains failures on stderr with exit 1 and usage errors with exit 2, before any ioctl', async () => {
    const missing = await dm(['info', 'nosuch']);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/ENXIO.*no device-mapper device named/);
    for (const argv of [['create'], ['create', 'a', 'b'], ['message', 'x', 'y', 'z']]) {
      expect(await dm(argv)).toMatchObject({ status: 2, stdout: '', stderr: expect.stringMatching(/Usage: dmsnap dm /) });
    }
    expect(await dm(['create', 'bad/name', '--table', '0 8 zero'])).toMatchObject({ status: 2, stderr: expect.stringMatching(/without '\/'/) });
    expect(system.devices.size).toBe(0);
    const rejected = await dm(['create', 'rej', '--table', '0 8 bogus-target']);
    expect(rejected.status).toBe(1);
    expect(rejected.stderr).toMatch(/rejected the table "0 8 bogus-target"; see dmesg/);
    expect(system.devices.size).toBe(0);
  });

  it.each(['version', 'ls', 'targets', 'create', 'load', 'clear', 'suspend', 'resume', 'remove', 'rename', 'info', 'table', 'status', 'deps', 'message', 'wait'])(
    'dm %s --help prints usage and an example on stdout',
    async (command) => {
      const help = await dm([command, '--help']);
      expect(help.status).toBe(0);
      expect(help.stdout).toMatch(/^Usage: dmsnap dm /);
      expect(help.stdout).toMatch(/Example/);
      expect(help.stderr).toBe('');
    },
  );
});
