/**
 * The CLI's compile cache (lib/cli/compile-cache.ts, used by dist/dmsnap.js): written after
 * a command, used by the next run of it, and never read from a place or a file another
 * user could have written (code cache is code that runs as root).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cacheDirectory, cacheSlot, readCache, writeCache } from '../../lib/cli/compile-cache';

const root = join(__dirname, '../..');
const CLI = join(root, 'dist/dmsnap.js');
const asRoot = process.geteuid?.() === 0;
const NOBODY = 65534;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'dmsnap-cache-test-'));
  chmodSync(dir, 0o700);
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the executable with the cache in `cacheDir`; returns its output and what the cache did. */
function cli(args: string[], cacheDir: string, nodeArgs: string[] = []) {
  const result = spawnSync(process.execPath, [...nodeArgs, CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, DMSNAP_CACHE_DIR: cacheDir, DMSNAP_DEBUG: 'compile-cache' },
  });
  const notes = result.stderr.split('\n').filter((line) => line.startsWith('dmsnap: compile cache: '));
  return { status: result.status, stdout: result.stdout, notes: notes.map((line) => line.slice('dmsnap: compile cache: '.length)) };
}

describe('the compile cache files', () => {
  const st = () => statSync(__filename);

  it('round-trips the data after a header naming the bundle and Node', () => {
    const slot = cacheSlot(dir, 'snapshot', st());
    expect(slot.file).toBe(join(dir, 'cli-snapshot.bin'));
    writeCache(slot, Buffer.from('code'));
    expect(readCache(slot)?.toString()).toBe('code');
    expect(statSync(slot.file).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir)).toEqual(['cli-snapshot.bin']);
  });

  it('names odd commands "other", never a path', () => {
    expect(cacheSlot(dir, '../../etc/passwd', st()).file).toBe(join(dir, 'cli-other.bin'));
  });

  it('ignores data written for another bundle or another Node', () => {
    const slot = cacheSlot(dir, 'status', st());
    writeCache(slot, Buffer.from('code'));
    expect(readCache({ ...slot, header: slot.header.replace(process.version, 'v0.0.0') })).toBeUndefined();
  });

  it('does not read a file others can write, a symlink, or a file of another user', () => {
    const slot = cacheSlot(dir, 'status', st());
    writeCache(slot, Buffer.from('code'));
    chmodSync(slot.file, 0o666);
    expect(readCache(slot)).toBeUndefined();
    chmodSync(slot.file, 0o600);
    const elsewhere = join(dir, 'planted');
    writeFileSync(elsewhere, readFileSync(slot.file), { mode: 0o600 });
    rmSync(slot.file);
    symlinkSync(elsewhere, slot.file);
    expect(readCache(slot)).toBeUndefined();
    if (asRoot) {
      rmSync(slot.file);
      writeFileSync(slot.file, readFileSync(elsewhere), { mode: 0o600 });
      chownSync(slot.file, NOBODY, NOBODY);
      expect(readCache(slot)).toBeUndefined();
    }
  });
});

describe('the cache directory', () => {
  it('is off with DMSNAP_COMPILE_CACHE=0', () => {
    expect(cacheDirectory({ DMSNAP_CACHE_DIR: dir, DMSNAP_COMPILE_CACHE: '0' })).toMatchObject({ warn: false });
  });

  it('is created, mode 0700', () => {
    const inner = join(dir, 'cache');
    expect(cacheDirectory({ DMSNAP_CACHE_DIR: inner })).toEqual({ dir: inner });
    expect(statSync(inner).mode & 0o777).toBe(0o700);
  });

  it('is refused, with a warning, when others can write to it or to a parent', () => {
    chmodSync(dir, 0o777);
    const refused = cacheDirectory({ DMSNAP_CACHE_DIR: join(dir, 'cache') });
    expect(refused).toMatchObject({ warn: true });
    expect('refusal' in refused && refused.refusal).toMatch(/unsafe compile cache directory .*writable by other users/);
    chmodSync(dir, 0o700);
    mkdirSync(join(dir, 'open'), { mode: 0o700 });
    chmodSync(join(dir, 'open'), 0o770);
    expect(cacheDirectory({ DMSNAP_CACHE_DIR: join(dir, 'open') })).toMatchObject({ warn: true });
  });

  (asRoot ? it : it.skip)('is refused when another user owns it', () => {
    mkdirSync(join(dir, 'theirs'), { mode: 0o700 });
    chownSync(join(dir, 'theirs'), NOBODY, NOBODY);
    expect(cacheDirectory({ DMSNAP_CACHE_DIR: join(dir, 'theirs') })).toMatchObject({ warn: true });
  });
});

describe('dist/dmsnap.js with the cache', () => {
  beforeAll(() => {
    if (!existsSync(CLI)) throw new Error('no dist/dmsnap.js: run npm run build:ts first');
  });

  it('writes the cache after a command and uses it the next time; output unchanged', () => {
    const first = cli(['help', 'status'], dir);
    expect(first.notes).toEqual(['none yet', `written to ${join(dir, 'cli-help.bin')}`]);
    const second = cli(['help', 'status'], dir);
    expect(second.notes).toEqual(['used']);
    expect(second.stdout).toBe(first.stdout);
    expect(second.stdout).toMatch(/^Usage: dmsnap status/);
    expect(cli(['--version'], dir).notes).toEqual(['none yet', `written to ${join(dir, 'cli-main.bin')}`]);
  });

  it('runs uncached, and rewrites the file, when the data is damaged', () => {
    cli(['--version'], dir);
    const file = join(dir, 'cli-main.bin');
    const data = readFileSync(file);
    data.fill(0x41, data.length - 4096);
    writeFileSync(file, data, { mode: 0o600 });
    const damaged = cli(['--version'], dir);
    expect(damaged.status).toBe(0);
    expect(damaged.notes).toEqual(['none yet', `written to ${file}`]);
    expect(cli(['--version'], dir).notes).toEqual(['used']);
  });

  it('runs uncached, and rewrites the file, when V8 rejects the data (other V8 flags)', () => {
    cli(['--version'], dir);
    const other = cli(['--version'], dir, ['--stack-size=900']);
    expect(other.status).toBe(0);
    expect(other.notes).toEqual(['rejected by V8', `written to ${join(dir, 'cli-main.bin')}`]);
  });

  it('leaves a planted file alone and runs without it', () => {
    const planted = join(dir, 'planted');
    writeFileSync(planted, 'not code', { mode: 0o666 });
    symlinkSync(planted, join(dir, 'cli-main.bin'));
    const run = cli(['--version'], dir);
    expect(run.status).toBe(0);
    expect(run.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    expect(readFileSync(planted, 'utf8')).toBe('not code'); // the rename replaced the link, not its target
  });

  it('warns about an unsafe directory (unless -q) and works without it', () => {
    chmodSync(dir, 0o777);
    const loud = spawnSync(process.execPath, [CLI, '--version'], { encoding: 'utf8', env: { ...process.env, DMSNAP_CACHE_DIR: join(dir, 'c') } });
    expect(loud.status).toBe(0);
    expect(loud.stderr).toMatch(/^dmsnap: warning: unsafe compile cache directory .*DMSNAP_CACHE_DIR/);
    const quiet = spawnSync(process.execPath, [CLI, '-q', '--version'], { encoding: 'utf8', env: { ...process.env, DMSNAP_CACHE_DIR: join(dir, 'c') } });
    expect(quiet.stderr).toBe('');
  });
});
