import { createFakeSystem } from '../support/fake-binding';
import { runFakeCli } from '../support/fake-cli';

async function run(argv: string[], system = createFakeSystem()) {
  const { status: code, stdout: out, stderr: err } = await runFakeCli(system, argv);
  return { code, out, err };
}

describe('dmsnap CLI', () => {
  it('prints help with exit codes on --help', async () => {
    const { code, out } = await run(['--help']);
    expect(code).toBe(0);
    expect(out).toMatch(/^Usage: dmsnap COMMAND/m);
    expect(out).toMatch(/4 {2}busy/);
  });

  it('exits 2 without a command, usage on stderr', async () => {
    const { code, out, err } = await run([]);
    expect(code).toBe(2);
    expect(out).toBe('');
    expect(err).toMatch(/Usage/);
  });

  it('exits 2 on an unknown command or option', async () => {
    expect((await run(['frobnicate'])).code).toBe(2);
    const bad = await run(['dm', 'version', '--bogus']);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/unknown option --bogus/);
  });

  it('prints versions with dm version', async () => {
    const { code, out } = await run(['dm', 'version']);
    expect(code).toBe(0);
    expect(out).toMatch(/^Driver version: +4\.47\.0$/m);
    const json = await run(['dm', 'version', '--json']);
    expect(JSON.parse(json.out)).toEqual({ dmsnap: expect.any(String), driver: '4.47.0' });
  });

  it('explains a missing driver on stderr and exits 1', async () => {
    const system = createFakeSystem();
    system.dmLoaded = false;
    const { code, out, err } = await run(['dm', 'ls'], system);
    expect(code).toBe(1);
    expect(out).toBe('');
    expect(err).toMatch(/modprobe dm-mod/);
  });

  it('prints the dmsnap version with dm version also without a driver, and says why the driver line is missing', async () => {
    const system = createFakeSystem();
    system.dmLoaded = false;
    const { code, out, err } = await run(['dm', 'version'], system);
    expect(code).toBe(0);
    expect(out).toMatch(/^dmsnap version: +\S+\n$/);
    expect(err).toMatch(/cannot read the driver version: .*modprobe dm-mod/);
  });

  it('prints the package version', async () => {
    const { code, out } = await run(['--version']);
    expect(code).toBe(0);
    expect(out.trim()).toBe(require('../../package.json').version);
  });
});

describe('COW file options', () => {
  it.each([
    [['snapshot', 'md2'], /--cow DEVICE or --cow-file FILE is required/],
    [['snapshot', 'md2', '--cow', '/dev/sdb6', '--cow-file', '/var/tmp/x'], /not both/],
    [['snapshot', 'md2', '--cow', '/dev/sdb6', '--cow-size', '1G'], /--cow-size sizes a COW file/],
    [['snapshot', 'md2', '--cow-file', '/var/tmp/x', '--cow-size', '1.5x'], /--cow-size/],
    [['backup', 'md2', '--cow', '/dev/sdb6', '--min-free', '5', '--', 'true'], /--min-free watches a COW file/],
    [['backup', 'md2', '--cow-file', '/var/tmp/x', '--autoextend', '30', '--', 'true'], /--autoextend must be THRESHOLD\[:STEP\]/],
    [['image', 'md2', '--cow-file', '/var/tmp/x', '--output', '/var/tmp/x'], /name the same file/],
    [['image', 'md2', '--cow-file', '/var/tmp/x', '--min-free', '100', '--output', '-'], /--min-free must be a percentage/],
    [['monitor', '--on-full', 'explode'], /--on-full must be drop or keep/],
    [['monitor', '--interval', '0'], /--interval must be/],
    [['monitor', '--autoextend', '70:0'], /--autoextend must be/],
    [['image', 'md2', '--cow', '/dev/sdb6'], /--output FILE\|-, --update IMG or --delta FILE\|- is required/],
    [['image', 'md2', '--cow', '/dev/sdb6', '--update', '/srv/a.img', '--delta', '-'], /not both/],
    [['image', 'md2', '--cow', '/dev/sdb6', '--update', '/srv/a.img', '--output', '/srv/b.img'], /--output is for a full image/],
    [['image', 'md2', '--cow', '/dev/sdb6', '--delta', '-', '--track'], /--track is for a full image/],
    [['image', 'md2', '--update', '/srv/a.img'], /--cow DEVICE or --cow-file FILE is required/],
    [['image', 'md2', '--cow', '/dev/sdb6', '--update', '-'], /--update needs an image file/],
    [['apply', 'only-one'], /expected DELTA/],
  ])('dmsnap %j exits 2 before it touches anything', async (argv, message) => {
    const system = createFakeSystem();
    const { code, out, err } = await run(argv as string[], system);
    expect({ code, out }).toEqual({ code: 2, out: '' });
    expect(err).toMatch(message);
    expect(system.devices.size).toBe(0);
  });
});

describe('a failed system call', () => {
  it('is reported by its message, without a stack, with exit 1', async () => {
    const { code, out, err } = await run(['apply', '/nonexistent/dmsnap.delta', '/nonexistent/dmsnap.img']);
    expect({ code, out }).toEqual({ code: 1, out: '' });
    expect(err).toMatch(/^dmsnap apply: .*ENOENT.*\/nonexistent\//);
    expect(err).not.toMatch(/unexpected error|\n +at /);
  });
});
