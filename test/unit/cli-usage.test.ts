/**
 * The command line as util-linux tools behave: every argument is checked before the
 * kernel is touched, so that on a machine without device-mapper (the fake kernel with
 * dm-mod not loaded: opening /dev/mapper/control fails with ENOENT) every mistake still
 * exits 2 with "dmsnap CMD: message" and the command's usage on stderr, and nothing on
 * stdout. A command that opened the control node first would exit 1 here instead.
 * Also: the global options before and after the command, `dmsnap help CMD`, the version,
 * and the errno hints of explainFailure.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { explainFailure } from '../../lib/explain';
import { commands } from '../../lib/cli/main';
import { VERSION } from '../../lib/version';
import { createFakeSystem, type FakeSystem } from '../support/fake-binding';
import { runFakeCli } from '../support/fake-cli';

const lockDir = mkdtempSync(join(tmpdir(), 'dmsnap-usage-locks-'));
afterAll(() => rmSync(lockDir, { recursive: true, force: true }));

/** A fake system without device-mapper: opening the control node fails with ENOENT. */
function withoutDm(): FakeSystem {
  const system = createFakeSystem();
  system.dmLoaded = false;
  return system;
}

/** Runs argv on a machine without device-mapper (or on `system`). */
function cli(argv: string[], system = withoutDm(), input = '') {
  return runFakeCli(system, argv, { udev: false, lockDir, devDir: join(lockDir, 'no-dev') }, input);
}

const names = commands.map((c) => c.name.join(' '));

/**
 * For every command, arguments it accepts: each must get past every check and then fail
 * only for want of device-mapper (exit 1). 'md2' is the NAME the bad-name cases replace.
 */
const VALID: Record<string, string[]> = {
  prepare: ['/dev/sdb1', '--name', 'md2'],
  detach: ['md2'],
  release: ['md2'],
  snapshot: ['md2', '--cow', '/dev/sdb6', '--chunk-size', '64k'],
  status: ['md2'],
  drop: ['md2', '--snapshot-name', 'md2-snap'],
  rollback: ['md2', '--wait'],
  ls: [],
  backup: ['md2', '--cow', '/dev/sdb6', '--usage-limit', '80', '--', 'true'],
  image: ['md2', '--cow', '/dev/sdb6', '--output', '/nonexistent/md2.img'],
  changes: ['md2'],
  apply: ['/nonexistent/md2.delta', '/nonexistent/md2.img'],
  recover: [],
  monitor: ['--interval', '1'],
  'dm version': [],
  'dm ls': [],
  'dm targets': [],
  'dm create': ['md2', '--table', '0 8 zero'],
  'dm load': ['md2', '--table', '0 8 zero'],
  'dm clear': ['md2'],
  'dm suspend': ['md2'],
  'dm resume': ['md2'],
  'dm remove': ['md2'],
  'dm rename': ['md2', 'md3'],
  'dm info': ['md2'],
  'dm table': ['md2'],
  'dm status': ['md2'],
  'dm deps': ['md2'],
  'dm message': ['md2', '0', 'hello'],
  'dm wait': ['md2', '--timeout', '1'],
  help: ['snapshot'],
  completion: ['bash'],
};

/** What VALID does without device-mapper when it is not "fail with the modprobe hint". */
const VALID_OUTCOME: Record<string, { status: number; stderr: RegExp }> = {
  apply: { status: 1, stderr: /ENOENT/ },
  'dm version': { status: 0, stderr: /cannot read the driver version: .*modprobe dm-mod/ },
  help: { status: 0, stderr: /^$/ },
  completion: { status: 0, stderr: /^$/ },
};

/** `extra` added to `argv`, before a "--" if it has one (after it they would be backup's COMMAND). */
function plus(argv: string[], ...extra: string[]): string[] {
  const end = argv.indexOf('--');
  return end < 0 ? [...argv, ...extra] : [...argv.slice(0, end), ...extra, ...argv.slice(end)];
}

function optionsOf(name: string, type: 'string' | 'boolean'): string[] {
  const command = commands.find((c) => c.name.join(' ') === name)!;
  return Object.entries(command.options).filter(([, o]) => o.type === type).map(([option]) => option);
}

/** Whether the usage begins with a required positional (NAME, DEVICE, OLD, …). */
function needsPositional(name: string): boolean {
  return /^[A-Z]/.test(commands.find((c) => c.name.join(' ') === name)!.usage);
}

/** Exit 2, nothing on stdout, "dmsnap CMD: …" matching `message` and the usage line on stderr. */
async function expectUsageError(argv: string[], command: string, message: RegExp): Promise<void> {
  const result = await cli(argv);
  expect({ argv, status: result.status, stdout: result.stdout }).toEqual({ argv, status: 2, stdout: '' });
  expect(result.stderr).toMatch(new RegExp(`^dmsnap ${command}: `));
  expect(result.stderr).toMatch(message);
  expect(result.stderr).toMatch(new RegExp(`^Usage: dmsnap ${command}`, 'm'));
}

describe('the command table', () => {
  it('has valid arguments and hand-written mistakes for every command', () => {
    expect(Object.keys(VALID).sort()).toEqual([...names].sort());
    expect([...new Set(MALFORMED.map(([command]) => command))].sort()).toEqual([...names].sort());
  });
});

describe('valid arguments without device-mapper', () => {
  it.each(names)('%s gets past every check and fails only for want of the driver', async (name) => {
    const result = await cli([...name.split(' '), ...VALID[name]]);
    const expected = VALID_OUTCOME[name] ?? { status: 1, stderr: /\/dev\/mapper\/control.*ENOENT.*modprobe dm-mod/ };
    expect(result.status).toBe(expected.status);
    expect(result.stderr).toMatch(expected.stderr);
    if (expected.status !== 0) expect(result.stdout).toBe('');
  });
});

describe('mistakes generated from the command table, without device-mapper', () => {
  it.each(names)('%s: an unknown option, before or after the arguments', async (name) => {
    await expectUsageError([...name.split(' '), '--no-such-option', ...VALID[name]], name, /unknown option --no-such-option/);
    await expectUsageError([...name.split(' '), ...plus(VALID[name], '-Z')], name, /unknown option -Z/);
  });

  it.each(names.flatMap((name) => optionsOf(name, 'string').map((option) => [name, option])))('%s --%s without its value', async (name, option) => {
    await expectUsageError([...name.split(' '), ...plus(VALID[name], `--${option}`)], name, new RegExp(`option --${option} needs a value`));
  });

  it.each(names.flatMap((name) => optionsOf(name, 'boolean').map((option) => [name, option])))('%s --%s=yes (a switch with a value)', async (name, option) => {
    await expectUsageError([...name.split(' '), ...plus(VALID[name], `--${option}=yes`)], name, new RegExp(`option --${option} takes no value`));
  });

  it.each(names.filter((name) => !commands.find((c) => c.name.join(' ') === name)!.allowPositionals))('%s with a stray argument', async (name) => {
    await expectUsageError([...name.split(' '), ...VALID[name], 'stray'], name, /unexpected argument "stray"/);
  });

  it.each(names.filter(needsPositional))('%s without its arguments', async (name) => {
    await expectUsageError(name.split(' '), name, /missing|expected/);
  });

  it.each(names.filter((name) => VALID[name].includes('md2')))('%s with a NAME that has a "/"', async (name) => {
    const argv = [...VALID[name]];
    argv[argv.indexOf('md2')] = 'a/b';
    await expectUsageError([...name.split(' '), ...argv], name, /without '\/'/);
  });

  it.each(names.filter((name) => VALID[name][0] === 'md2'))('%s with NAMEs the kernel refuses', async (name) => {
    for (const [bad, message] of [['control', /other than/], ['..', /other than/], ['n'.repeat(128), /1 to 127 bytes/], ['a b', /white space/]] as const) {
      await expectUsageError([...name.split(' '), bad, ...VALID[name].slice(1)], name, message);
    }
  });
});

const COW = ['--cow', '/dev/sdb6'];

/** [command, its arguments, the message]: mistakes only a person would make, per command. */
const MALFORMED: [string, string[], RegExp][] = [
  ['prepare', ['/dev/sdb1', '--name', ''], /--name must be 1 to 127 bytes/],
  ['prepare', [''], /DEVICE must be a path/],
  ['prepare', ['/dev/sdb1', '--name', 'n'.repeat(125)], /with "-real" appended, must be 1 to 127 bytes/],
  ['prepare', ['/dev/sdb1', '--attach', ''], /--attach needs a COW device/],
  ['prepare', ['/dev/sdb1', '/dev/sdb2'], /unexpected argument "\/dev\/sdb2"/],
  ['detach', ['md2', 'md3'], /unexpected argument "md3"/],
  ['release', [], /missing NAME/],
  ['snapshot', ['md2'], /--cow DEVICE or --cow-file FILE is required/],
  ['snapshot', ['md2', ...COW, '--chunk-size', 'banana'], /--chunk-size must be a number of sectors or a size/],
  ['snapshot', ['md2', ...COW, '--chunk-size', '24'], /--chunk-size must be a power of two from 8 to 2097152 sectors/],
  ['snapshot', ['md2', ...COW, '--chunk-size', '2G'], /power of two/],
  ['snapshot', ['md2', ...COW, '--chunk-size', '3furlongs'], /unknown unit "furlongs"/],
  ['snapshot', ['md2', ...COW, '--chunksize', '64k'], /unknown option --chunksize \(did you mean --chunk-size\?\)/],
  ['snapshot', ['md2', '--cow-file', '/var/tmp/md2.cow', '--cow-size', '0'], /--cow-size must be larger than 0/],
  ['snapshot', ['md2', '--cow-file', '/var/tmp/md2.cow', '--cow-size', '1.5x'], /--cow-size/],
  ['snapshot', ['md2', ...COW, '--snapshot-name', 'a/b'], /--snapshot-name must be a name without '\/'/],
  ['snapshot', ['md2', 'md3', ...COW], /give one --cow per NAME/],
  ['snapshot', ['md2', 'md2', ...COW, '--cow', '/dev/sdb7'], /each NAME once/],
  ['snapshot', ['md2', ...COW, '--hook-timeout', '0'], /--hook-timeout must be/],
  ['snapshot', ['md2', ...COW, '--hook-dir', 'hooks'], /--hook-dir needs an absolute path/],
  ['snapshot', ['md2', ...COW, '--hook-dir', '/etc/hooks', '--no-hooks'], /not both/],
  ['snapshot', ['md2', '--cow', ''], /--cow needs a path/],
  ['snapshot', ['md2', '--cow', '--chunk-size', '64k'], /option --cow needs a value, not the option "--chunk-size"/],
  ['status', ['md2', 'md3'], /unexpected argument "md3"/],
  ['drop', ['md2', '--snapshot-name', 'a/b'], /--snapshot-name must be/],
  ['rollback', ['md2', '--wait', '--cancel'], /exclude each other/],
  ['rollback', ['md2', '--cancel', '--snapshot-name', 'md2-snap'], /--cancel takes no --snapshot-name/],
  ['rollback', ['md2', '--snapshot-name', ''], /--snapshot-name must be 1 to 127 bytes/],
  ['ls', ['--jsno'], /unknown option --jsno \(did you mean --json\?\)/],
  ['backup', ['md2', ...COW], /missing COMMAND/],
  ['backup', ['md2', ...COW, '--usage-limit', '0', '--', 'true'], /--usage-limit must be a percentage/],
  ['backup', ['md2', ...COW, '--usage-limit', '101', '--', 'true'], /--usage-limit must be a percentage/],
  ['backup', ['md2', ...COW, '--usage-limit', 'most', '--', 'true'], /--usage-limit must be a percentage/],
  ['backup', ['md2', ...COW, '--mount-dir', '', '--', 'true'], /--mount-dir needs a directory/],
  ['backup', ['md2', '--cow-file', '/var/tmp/md2.cow', '--min-free', '100', '--', 'true'], /--min-free must be a percentage/],
  ['backup', ['md2', ...COW, '--min-free', '5', '--', 'true'], /--min-free watches a COW file/],
  ['backup', ['md2', 'md3', ...COW, '--cow', '/dev/sdb7', 'tar'], /put "--" between the NAMEs and COMMAND/],
  ['backup', [...COW, '--', 'true'], /missing NAME/],
  ['backup', ['md2', ...COW, '--chunk-size', '1', '--', 'true'], /power of two/],
  ['image', ['md2', ...COW], /--output FILE\|-, --update IMG or --delta FILE\|- is required/],
  ['image', ['md2', ...COW, '--output', '-', '--sparse'], /--sparse needs a regular file/],
  ['image', ['md2', 'md3', ...COW, '--cow', '/dev/sdb7', '--output', '-', '--output', '/srv/md3.img'], /--output - \(stdout\) cannot hold/],
  ['image', ['md2', ...COW, '--update', '/srv/md2.img', '--chunk-size', '7'], /power of two/],
  ['image', ['a/b', ...COW, '--delta', '-'], /NAME must be a name without '\/'/],
  ['image', ['md2', ...COW, '--output', '/srv/md2.img', '--autoextend', '70'], /--autoextend watches a COW file/],
  ['image', ['md2', '--cow-file', '/srv/x', '--output', '/srv/x'], /name the same file/],
  ['changes', [], /missing NAME/],
  ['apply', ['only-one'], /expected DELTA/],
  ['apply', ['a', 'b', 'c'], /expected DELTA/],
  ['recover', ['--json=1'], /option --json takes no value/],
  ['monitor', ['--interval', '0'], /--interval must be/],
  ['monitor', ['--interval', 'often'], /--interval must be/],
  ['monitor', ['--on-full', 'explode'], /--on-full must be drop or keep/],
  ['monitor', ['--min-free', '100'], /--min-free must be a percentage/],
  ['monitor', ['--autoextend', '70:0'], /--autoextend must be/],
  ['monitor', ['--metrics', ''], /--metrics needs a file/],
  ['dm version', ['driver'], /unexpected argument "driver"/],
  ['dm ls', ['md2'], /unexpected argument "md2"/],
  ['dm targets', ['--jsn'], /did you mean --json\?/],
  ['dm create', ['md2', '--uuid', 'a b', '--table', '0 8 zero'], /--uuid must be a uuid without white space/],
  ['dm create', ['md2', '--notable', '--table', '0 8 zero'], /--notable and --table exclude each other/],
  ['dm create', ['md2', '--table', 'garbage'], /START LENGTH TYPE/],
  ['dm create', ['md2', '--table', '8 8 zero'], /start must be 0/],
  ['dm create', ['md2'], /no table given/],
  ['dm load', ['md2', '--table', '0 0 zero'], /length must be a positive integer/],
  ['dm clear', ['md2', 'md3'], /unexpected argument "md3"/],
  ['dm suspend', [], /missing NAME/],
  ['dm resume', ['md2', '--nolockfs=1'], /option --nolockfs takes no value/],
  ['dm remove', ['md2', 'a/b'], /NAME must be a name without '\/'/],
  ['dm rename', ['md2'], /missing OLD and NEW/],
  ['dm rename', ['md2', 'a/b'], /NEW must be a name without '\/'/],
  ['dm rename', ['md2', '--setuuid', ''], /--setuuid must be 1 to 128 bytes/],
  ['dm info', ['md2', 'md3'], /unexpected argument "md3"/],
  ['dm table', ['a/b'], /NAME must be/],
  ['dm status', ['.'], /NAME must be a name other than/],
  ['dm deps', [], /missing NAME/],
  ['dm message', ['md2', 'zero', 'hi'], /SECTOR must be a whole number/],
  ['dm message', ['md2', '0', ''], /MESSAGE is empty/],
  ['dm wait', ['md2', 'soon'], /EVENT_NR must be a whole number/],
  ['dm wait', ['md2', '99999999999'], /EVENT_NR must be a whole number from 0 to 4294967295/],
  ['dm wait', ['md2', '--timeout', 'soon'], /--timeout must be a number of seconds/],
  ['help', ['nosuch'], /unknown command "nosuch"/],
  ['help', ['snapshto'], /did you mean "snapshot"\?/],
  ['help', ['dm', 'tabel'], /unknown command "dm tabel" \(did you mean "dm table"\?\)/],
  ['help', ['snapshot', 'md2'], /unexpected argument "md2"/],
  ['completion', [], /missing the shell: bash or zsh/],
  ['completion', ['fish'], /unknown shell "fish": bash or zsh/],
  ['completion', ['bash', 'zsh'], /unexpected argument "zsh"/],
];

describe('hand-written mistakes, without device-mapper', () => {
  it.each(MALFORMED)('%s %j', async (command, argv, message) => {
    await expectUsageError([...command.split(' '), ...argv], command, message);
  });
});

describe('global options, before or after the command', () => {
  it('-q and --quiet silence the informational messages either way', async () => {
    const system = createFakeSystem();
    expect((await cli(['status'], system)).stderr).toMatch(/no origins/);
    for (const argv of [['-q', 'status'], ['--quiet', 'status'], ['status', '-q'], ['status', '--quiet']]) {
      expect(await cli(argv, system)).toEqual({ status: 0, stdout: '', stderr: '' });
    }
  });

  it('-q does not silence usage errors', async () => {
    await expectUsageError(['-q', 'snapshot', 'md2'], 'snapshot', /--cow DEVICE or --cow-file FILE is required/);
    await expectUsageError(['snapshot', 'md2', '-q'], 'snapshot', /--cow DEVICE or --cow-file FILE is required/);
  });

  it('-h and --help give the same help as "dmsnap help CMD", before or after the command', async () => {
    const help = await cli(['help', 'snapshot']);
    expect(help).toMatchObject({ status: 0, stderr: '', stdout: expect.stringMatching(/^Usage: dmsnap snapshot NAME\.\.\./) });
    for (const argv of [['-h', 'snapshot'], ['--help', 'snapshot'], ['-q', '--help', 'snapshot'], ['snapshot', '-h'], ['snapshot', 'md2', '--help'], ['snapshot', '--bogus', '--help']]) {
      expect(await cli(argv)).toEqual(help);
    }
  });

  it('--version prints the version, before or after the command', async () => {
    for (const argv of [['--version'], ['-q', '--version'], ['--version', 'snapshot'], ['snapshot', '--version'], ['dm', 'ls', '--version']]) {
      expect(await cli(argv)).toEqual({ status: 0, stdout: `${VERSION}\n`, stderr: '' });
    }
  });

  it('refuses an unknown option before the command with exit 2, suggesting the closest', async () => {
    for (const [argv, message] of [[['--frobnicate', 'status'], /^dmsnap: unknown option --frobnicate before the command\n/], [['--quite', 'status'], /did you mean --quiet\?/], [['-x', 'status'], /unknown option -x/]] as const) {
      const result = await cli([...argv]);
      expect(result).toMatchObject({ status: 2, stdout: '' });
      expect(result.stderr).toMatch(message);
      expect(result.stderr).toMatch(/^Usage: dmsnap /m);
    }
  });
});

describe('help', () => {
  it('prints the main help with "dmsnap help", -h and --help, and on stderr with exit 2 without a command', async () => {
    const help = await cli(['help']);
    expect(help).toMatchObject({ status: 0, stderr: '', stdout: expect.stringMatching(/^Usage: dmsnap COMMAND/m) });
    expect(help.stdout).toMatch(/^ {2}help {2,}/m);
    expect(await cli(['--help'])).toEqual(help);
    expect(await cli(['-h'])).toEqual(help);
    expect(await cli([])).toEqual({ status: 2, stdout: '', stderr: help.stdout });
  });

  it.each(names)('"dmsnap help %s" is "dmsnap %s --help"', async (name) => {
    const words = name.split(' ');
    const help = await cli(['help', ...words]);
    expect(help).toMatchObject({ status: 0, stderr: '', stdout: expect.stringMatching(new RegExp(`^Usage: dmsnap ${name}`)) });
    expect(await cli([...words, '--help'])).toEqual(help);
  });

  it('lists a group with "dmsnap help dm" and "dmsnap dm --help"; "dmsnap dm" alone is a usage error', async () => {
    const group = await cli(['help', 'dm']);
    expect(group).toMatchObject({ status: 0, stderr: '', stdout: expect.stringMatching(/^ {2}dmsnap dm version/) });
    expect(await cli(['dm', '--help'])).toEqual(group);
    expect(await cli(['-h', 'dm'])).toEqual(group);
    const bare = await cli(['dm']);
    expect(bare).toMatchObject({ status: 2, stdout: '' });
    expect(bare.stderr).toMatch(/^dmsnap dm: missing the command/);
    expect(bare.stderr).toContain(group.stdout);
    expect(bare.stderr).toMatch(/^Usage: dmsnap dm COMMAND/m);
    const unknown = await cli(['dm', 'frobnicate']);
    expect(unknown).toMatchObject({ status: 2, stdout: '', stderr: expect.stringMatching(/^dmsnap: unknown command "dm frobnicate"; run "dmsnap help" for the list\n/) });
    expect(unknown.stderr).toMatch(/^Usage: dmsnap dm COMMAND/m);
  });

  it('refuses an unknown command with exit 2 and the usage, suggesting the closest for a typo', async () => {
    const typo = await cli(['snapshto', 'md2']);
    expect(typo).toMatchObject({ status: 2, stdout: '', stderr: expect.stringMatching(/^dmsnap: unknown command "snapshto md2" \(did you mean "snapshot"\?\)/) });
    expect(typo.stderr).toMatch(/^Usage: dmsnap /m);
    expect((await cli(['frobnicate'])).stderr).not.toMatch(/did you mean/);
    expect(await cli(['dm', 'tabel'])).toMatchObject({ status: 2, stderr: expect.stringMatching(/did you mean "dm table"\?/) });
  });
});

describe('dm version', () => {
  it('prints dmsnap\'s version without the driver, says why on stderr, and exits 0', async () => {
    expect(await cli(['dm', 'version'])).toEqual({
      status: 0,
      stdout: `dmsnap version:    ${VERSION}\n`,
      stderr: expect.stringMatching(/^dmsnap dm version: cannot read the driver version: open \/dev\/mapper\/control failed: .*\(ENOENT\); .*modprobe dm-mod/),
    });
    const json = await cli(['dm', 'version', '--json']);
    expect(json.status).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({ dmsnap: VERSION, driver: null });
    expect(await cli(['-q', 'dm', 'version'])).toEqual({ status: 0, stdout: `dmsnap version:    ${VERSION}\n`, stderr: '' });
  });

  it('adds the driver line, as dmsetup prints it, when the driver answers', async () => {
    expect(await cli(['dm', 'version'], createFakeSystem())).toEqual({ status: 0, stdout: `dmsnap version:    ${VERSION}\nDriver version:    4.47.0\n`, stderr: '' });
  });
});

describe('a table the kernel rejects for a missing target', () => {
  it('names the target module to load', async () => {
    const result = await cli(['dm', 'create', 'md2', '--table', '0 8 no-such-target'], createFakeSystem());
    expect(result).toMatchObject({ status: 1, stdout: '' });
    expect(result.stderr).toMatch(/rejected the table "0 8 no-such-target"/);
    expect(result.stderr).toMatch(/the kernel has no "no-such-target" target loaded: run "modprobe -a dm-no-such-target" as root/);
  });
});

describe('errno hints (explainFailure)', () => {
  const control = { syscall: 'open', path: '/dev/mapper/control' };

  it.each([
    ['ENOENT on the control node: load dm-mod; the kernel or udev makes the node', { ...control, errno: 2 }, /\(ENOENT\); the device-mapper driver is not loaded: run "modprobe dm-mod" as root \(loading it makes the kernel, or udev, create \/dev\/mapper\/control\)$/],
    ['ENODEV on the control node: load dm-mod', { ...control, errno: 19 }, /\(ENODEV\); the device-mapper driver is not loaded \(\/dev\/mapper\/control exists, but no driver answers it\): run "modprobe dm-mod" as root$/],
    ['ENXIO on the control node: load dm-mod', { ...control, errno: 6 }, /\(ENXIO\); .*modprobe dm-mod/],
    ['ENODEV from a device-mapper ioctl: dm-mod or a target module', { errno: 19, syscall: 'ioctl', ioctl: 'DM_DEV_CREATE', path: '/dev/mapper/control', device: 'md2' }, /\(ENODEV\); .*modprobe dm-mod.*modprobe dm-snapshot/],
    ['ENODEV from mount: the filesystem module', { errno: 19, syscall: 'mount', path: '/mnt', device: '/dev/mapper/md2-snap' }, /\(ENODEV\); the kernel has no driver for this filesystem type: load its module/],
    ['ENODEV opening a device', { errno: 19, syscall: 'open', path: '/dev/sdz' }, /\(ENODEV\); the driver of this device is not loaded/],
    ['ENXIO opening a device node with nothing behind it', { errno: 6, syscall: 'open', path: '/dev/sdz' }, /\(ENXIO\); no device is behind \/dev\/sdz .*lsblk/],
    ['ENXIO for a device-mapper device', { errno: 6, syscall: 'ioctl', ioctl: 'DM_DEV_STATUS', path: '/dev/mapper/control', device: 'md2' }, /\(ENXIO\); no device-mapper device named "md2" exists$/],
    ['EACCES on the control node: root', { ...control, errno: 13 }, /\(EACCES\); .*\(CAP_SYS_ADMIN\): run as root$/],
    ['EPERM from an ioctl: root', { errno: 1, syscall: 'ioctl', ioctl: 'BLKGETSIZE64', path: '/dev/sdb' }, /\(EPERM\); .*run as root$/],
  ])('%s', (_what, failure, message) => {
    expect(explainFailure(failure)).toMatch(message);
  });

  it('adds no hint of its own to a rejected table (the loader names the table)', () => {
    expect(explainFailure({ errno: 19, syscall: 'ioctl', ioctl: 'DM_TABLE_LOAD', path: '/dev/mapper/control', device: 'md2' })).toMatch(/\(ENODEV\)$/);
  });
});
