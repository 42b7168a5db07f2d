import { PassThrough } from 'node:stream';
import { main } from '../../lib/cli/main';
import { createFakeSystem } from '../support/fake-binding';

function run(argv: string[], system = createFakeSystem()) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => (out += d));
  stderr.on('data', (d) => (err += d));
  return main(argv, { stdout, stderr, stdin: new PassThrough(), binding: system.binding }).then((code) => ({ code, out, err }));
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
    expect(bad.err).toMatch(/Unknown option '--bogus'/);
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
    const { code, out, err } = await run(['dm', 'version'], system);
    expect(code).toBe(1);
    expect(out).toBe('');
    expect(err).toMatch(/modprobe dm-mod/);
  });

  it('prints the package version', async () => {
    const { code, out } = await run(['--version']);
    expect(code).toBe(0);
    expect(out.trim()).toBe(require('../../package.json').version);
  });
});
