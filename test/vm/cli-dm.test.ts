/**
 * `dmsnap dm …` driven as a user would: the compiled CLI in a child process, for what
 * only the kernel shows (its tables, events, nodes, keys as dmsetup prints them, ioctl
 * flags). The command line itself (options, help, output formats, exit codes) is proven
 * against the fake kernel in test/unit/cli-dm.test.ts.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DeviceMapper, maskTableKeys } from '../../lib';
import { cli, createLoopDevice, dmsetup, run, scratchDir, withUdev } from './support/system';

const prefix = `dmsnap-c${process.pid}-`;

afterEach(() => {
  for (let round = 0; round < 3; round++) {
    const names = dmsetup('ls').split('\n').map((l) => l.split('\t')[0]).filter((n) => n.startsWith(prefix));
    for (const name of names) {
      if (dmsetup('info', '-c', '--noheadings', '-o', 'attr', name).startsWith('s')) cli(['dm', 'resume', name]);
      cli(['dm', 'remove', name]);
    }
  }
});

describe('dmsnap dm', () => {
  it('creates from a table on stdin, as dmsetup does', () => {
    const loop = createLoopDevice(4 * 1024 * 1024);
    const size = run('blockdev', ['--getsz', loop]).trim();
    const name = `${prefix}stdin`;
    const created = cli(['dm', 'create', name], { input: `0 ${size} linear ${loop} 0\n` });
    expect(created).toMatchObject({ status: 0, stdout: '', stderr: '' });
    const [major, minor] = run('stat', ['-c', '%t %T', loop]).trim().split(' ').map((h) => parseInt(h, 16));
    expect(cli(['dm', 'table', name]).stdout).toBe(`0 ${size} linear ${major}:${minor} 0\n`);
    expect(run('blockdev', ['--getsz', `/dev/mapper/${name}`]).trim()).toBe(size);
  });

  it('waits for an event, and times out with exit 1', async () => {
    const name = `${prefix}wait`;
    cli(['dm', 'create', name, '--table', '0 8 zero']);
    const child = spawn(process.execPath, [join(process.cwd(), 'dist/dmsnap.js'), 'dm', 'wait', name, '--json']);
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    await new Promise((r) => setTimeout(r, 1500));
    expect(child.exitCode).toBeNull();
    cli(['dm', 'rename', name, `${name}-2`]);
    expect({ status: await exited, err }).toEqual({ status: 0, err: '' });
    expect(JSON.parse(out)).toEqual({ name: `${name}-2`, eventNr: 1 });
    const timeout = cli(['dm', 'wait', `${name}-2`, '--timeout', '0.3']);
    expect(timeout.status).toBe(1);
    expect(timeout.stderr).toMatch(/no event/);
  });

  it(`manages nodes ${withUdev ? 'through udev' : 'itself'}`, () => {
    const name = `${prefix}nodes`;
    cli(['dm', 'create', name, '--table', '0 8 zero']);
    const kind = run('stat', ['-c', '%F', `/dev/mapper/${name}`]).trim();
    expect(kind).toBe(withUdev ? 'symbolic link' : 'block special file');
  });
});

/** The ioctls a CLI run makes, as strace decodes them (one line each). */
function straceIoctls(args: string[], input = ''): string[] {
  const log = join(scratchDir(), `strace-${process.pid}.log`);
  const result = spawnSync('strace', ['-f', '-qq', '-e', 'trace=ioctl', '-o', log, process.execPath, join(process.cwd(), 'dist/dmsnap.js'), ...args], {
    encoding: 'utf8',
    input,
  });
  expect(result.status).toBe(0);
  return readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('DM_'));
}

describe('keys in tables', () => {
  const hex = () => randomBytes(32).toString('hex');

  it('dm table masks crypt keys exactly as dmsetup does; --showkeys and the library show them', async () => {
    const loop = createLoopDevice(1024 * 1024);
    const name = `${prefix}crypt`;
    const key = hex();
    run('dmsetup', ['create', name, '--table', `0 2048 crypt aes-xts-plain64 ${key} 0 ${loop} 0`]);
    const masked = cli(['dm', 'table', name]);
    expect(masked).toMatchObject({ status: 0, stderr: '' });
    expect(masked.stdout).toBe(dmsetup('table', name));
    expect(masked.stdout).toMatch(/^0 2048 crypt aes-xts-plain64 0{64} 0 \d+:\d+ 0\n$/);
    const shown = cli(['dm', 'table', name, '--showkeys']);
    expect(shown.stdout).toBe(dmsetup('table', '--showkeys', name));
    expect(shown.stdout).toContain(key);
    // Without a name: every device, "NAME: " before each line, as dmsetup prints them.
    const mine = (text: string) => text.split('\n').filter((l) => l.startsWith(`${name}: `));
    expect(mine(cli(['dm', 'table']).stdout)).toEqual(mine(dmsetup('table')));
    expect(mine(cli(['dm', 'table', '--showkeys']).stdout)).toEqual(mine(dmsetup('table', '--showkeys')));
    const json = JSON.parse(cli(['dm', 'table', name, '--json']).stdout);
    expect(json.devices[0].targets[0].params).toBe(masked.stdout.split(' ').slice(3).join(' ').trimEnd());
    expect(JSON.stringify(json)).not.toContain(key);
    expect(JSON.parse(cli(['dm', 'table', name, '--json', '--showkeys']).stdout).devices[0].targets[0].params).toContain(key);
    // The library returns the real table (what a reload needs) and masks on request.
    using dm = await DeviceMapper.open();
    const table = await dm.table(name);
    expect(table[0].params).toContain(key);
    expect(`0 2048 crypt ${maskTableKeys(table)[0].params}\n`).toBe(dmsetup('table', name));
    // The inactive slot is masked the same way.
    const inactiveKey = hex();
    expect(cli(['dm', 'load', name, '--table', `0 2048 crypt aes-xts-plain64 ${inactiveKey} 5 ${loop} 0`]).status).toBe(0);
    expect(cli(['dm', 'table', name, '--inactive']).stdout).toBe(dmsetup('table', '--inactive', name));
    expect(cli(['dm', 'table', name, '--inactive']).stdout).not.toContain(inactiveKey);
    expect(cli(['dm', 'clear', name]).status).toBe(0);
  });

  it('dm table masks integrity keys exactly as dmsetup does', () => {
    const zero = `${prefix}izero`;
    const name = `${prefix}integrity`;
    const hashKey = hex();
    const journalKey = hex();
    run('dmsetup', ['create', zero, '--table', '0 10000 zero']);
    if (!withUdev) dmsetup('mknodes', zero);
    const params = `/dev/mapper/${zero} 0 32 J 7 journal_sectors:88 interleave_sectors:32768 buffer_sectors:128 journal_watermark:50 commit_time:10000 internal_hash:hmac(sha256):${hashKey} journal_crypt:ctr(aes):${journalKey}`;
    run('dmsetup', ['create', name, '--table', `0 7856 integrity ${params}`]);
    const masked = cli(['dm', 'table', name]).stdout;
    expect(masked).toBe(dmsetup('table', name));
    expect(masked).toContain(`internal_hash:hmac(sha256):${'0'.repeat(64)}`);
    expect(masked).toContain(`journal_crypt:ctr(aes):${'0'.repeat(64)}`);
    const shown = cli(['dm', 'table', name, '--showkeys']).stdout;
    expect(shown).toBe(dmsetup('table', '--showkeys', name));
    expect(shown).toContain(hashKey);
    expect(shown).toContain(journalKey);
  });

  it('sends DM_SECURE_DATA_FLAG with tables that hold keys and with every table or status query, and only there', () => {
    const loop = createLoopDevice(1024 * 1024);
    const name = `${prefix}secure`;
    const crypt = straceIoctls(['dm', 'create', name, '--table', `0 2048 crypt aes-xts-plain64 ${hex()} 0 ${loop} 0`]);
    expect(crypt.filter((l) => l.includes('DM_TABLE_LOAD'))).toEqual([expect.stringContaining('DM_SECURE_DATA_FLAG')]);
    expect(crypt.filter((l) => l.includes('DM_DEV_CREATE') || l.includes('DM_DEV_SUSPEND')).some((l) => l.includes('DM_SECURE_DATA_FLAG'))).toBe(false);
    for (const kind of ['table', 'status']) {
      const status = straceIoctls(['dm', kind, name]).filter((l) => l.includes('DM_TABLE_STATUS'));
      expect(status.length).toBeGreaterThan(0);
      expect(status.every((l) => l.includes('DM_SECURE_DATA_FLAG'))).toBe(true);
    }
    const plain = straceIoctls(['dm', 'load', name, '--table', '0 2048 zero']);
    expect(plain.filter((l) => l.includes('DM_TABLE_LOAD'))).toEqual([expect.not.stringContaining('DM_SECURE_DATA_FLAG')]);
    expect(cli(['dm', 'clear', name]).status).toBe(0);
  });
});
