/**
 * The hooks around a freeze, with real processes: hook scripts in a temporary directory
 * append to a log, and the assertions read what really ran, in which order, with which
 * arguments and environment, and that a hook past its time limit is really gone.
 */
import { chmodSync, chownSync, existsSync, lchownSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { DmsnapError, InvalidArgumentError } from '../../lib/errors';
import { DEFAULT_HOOK_DIR, FreezeHooks, type FreezeHookOptions, type HookContext } from '../../lib/system/hooks';

const NOBODY = 65534;
const asRoot = process.geteuid?.() === 0;
const context: HookContext = { origins: ['md2', 'vg-root'], snapshots: ['md2-snap', 'vg-root-snap'] };
let base: string;
let dir: string;
let log: string;
let output: PassThrough;
let written: string;

beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), 'dmsnap-hooks-'));
  chmodSync(base, 0o700);
  dir = join(base, 'hooks.d');
  mkdirSync(dir);
  chmodSync(dir, 0o755);
  log = join(base, 'log');
  writeFileSync(log, '');
  written = '';
  output = new PassThrough();
  output.on('data', (chunk: Buffer) => (written += chunk.toString()));
});
afterEach(() => rmSync(base, { recursive: true, force: true }));

/** A hook script in `where` (default the hook directory) that logs "NAME PHASE", then runs `body`. */
function hook(name: string, body = '', mode = 0o755, where = dir): string {
  const path = join(where, name);
  writeFileSync(path, `#!/bin/sh\necho "${name} $1" >> ${log}\n${body}\n`);
  chmodSync(path, mode);
  return path;
}
const logged = () => readFileSync(log, 'utf8').split('\n').filter(Boolean);
const load = (options: FreezeHookOptions = {}) => FreezeHooks.load({ hookDir: dir, output, ...options });
async function failure(promise: Promise<unknown>): Promise<DmsnapError> {
  try {
    await promise;
  } catch (error) {
    return error as DmsnapError;
  }
  throw new Error('did not fail');
}

/** Whether a process is gone: no such pid, or a zombie no one has reaped yet. */
function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}
async function waitGone(pid: number): Promise<boolean> {
  for (let i = 0; i < 50 && !gone(pid); i++) await sleep(20);
  return gone(pid);
}

describe('the order and the environment of hooks', () => {
  it('runs the hook directory in byte order of names, then the command; post-thaw in reverse', async () => {
    for (const name of ['b', 'Z_z', '10', 'A-1']) hook(name);
    for (const name of ['.hidden', 'x.dpkg-old', 'y~', 'has.dot', 'README.md']) hook(name);
    const hooks = await load({ preFreeze: `echo "cmd pre $DMSNAP_HOOK_PHASE" >> ${log}`, postThaw: `echo "cmd post $DMSNAP_HOOK_PHASE" >> ${log}` });
    expect(hooks.empty).toBe(false);
    await hooks.preFreeze(context);
    expect(logged()).toEqual(['10 pre-freeze', 'A-1 pre-freeze', 'Z_z pre-freeze', 'b pre-freeze', 'cmd pre pre-freeze']);
    await hooks.postThaw(context);
    expect(logged().slice(5)).toEqual(['cmd post post-thaw', 'b post-thaw', 'Z_z post-thaw', 'A-1 post-thaw', '10 post-thaw']);
  });

  it('gives a hook its phase, the names, /dev/null for stdin, and a pipe to `output` for stdout and stderr', async () => {
    hook('10-env', `echo "env $DMSNAP_HOOK_PHASE|$DMSNAP_ORIGINS|$DMSNAP_SNAPSHOTS" >> ${log}
      echo "fd $(readlink /proc/$$/fd/0) $(readlink /proc/$$/fd/1)" >> ${log}
      echo "out of $1"; echo "err of $1" >&2`);
    const stdout = jest.spyOn(process.stdout, 'write');
    try {
      const hooks = await load();
      await hooks.preFreeze(context);
      await hooks.postThaw(context);
      expect(stdout.mock.calls.filter(([text]) => String(text).includes('out of'))).toEqual([]);
    } finally {
      stdout.mockRestore();
    }
    const lines = logged();
    expect(lines.filter((l) => l.startsWith('env '))).toEqual(['env pre-freeze|md2 vg-root|md2-snap vg-root-snap', 'env post-thaw|md2 vg-root|md2-snap vg-root-snap']);
    const fds = lines.filter((l) => l.startsWith('fd '));
    expect(fds).toEqual([expect.stringMatching(/^fd \/dev\/null (pipe|socket):\[\d+\]$/), expect.stringMatching(/^fd \/dev\/null (pipe|socket):\[\d+\]$/)]);
    expect(fds.filter((l) => l.endsWith(` ${readlinkSync('/proc/self/fd/1')}`))).toEqual([]); // not dmsnap's stdout
    expect(written).toContain('out of pre-freeze');
    expect(written).toContain('err of pre-freeze');
    expect(written).toContain('out of post-thaw');
  });

  it('calls callbacks with the phase and the context, after the hook directory', async () => {
    hook('10-a');
    const calls: unknown[] = [];
    const hooks = await load({
      preFreeze: (c) => void calls.push({ ...c, log: logged().length }),
      postThaw: async (c) => {
        await sleep(10);
        calls.push({ ...c, log: logged().length });
      },
    });
    await hooks.preFreeze(context);
    await hooks.postThaw(context);
    expect(calls).toEqual([
      { phase: 'pre-freeze', origins: ['md2', 'vg-root'], snapshots: ['md2-snap', 'vg-root-snap'], log: 1 },
      { phase: 'post-thaw', origins: ['md2', 'vg-root'], snapshots: ['md2-snap', 'vg-root-snap'], log: 1 },
    ]);
    expect(logged()).toEqual(['10-a pre-freeze', '10-a post-thaw']);
  });

  it('leaves no process, pipe or timer behind, even when a hook leaves a child holding its output', async () => {
    hook('10-bg', `[ "$1" = pre-freeze ] && { sleep 30 & echo $! > ${base}/bg; }; exit 0`);
    const count = () => process.getActiveResourcesInfo().filter((r) => /Timeout|Process|Pipe|TTYWrap/.test(r)).length;
    const before = count();
    const started = Date.now();
    const hooks = await load();
    await hooks.preFreeze(context);
    await hooks.postThaw(context);
    expect(Date.now() - started).toBeLessThan(3000); // not the 30 s of the child that holds its pipes
    await sleep(50);
    expect(count()).toBeLessThanOrEqual(before); // jest's own timers come and go
    process.kill(Number(readFileSync(join(base, 'bg'), 'utf8')), 'SIGKILL');
  });
});

describe('a failed pre-freeze hook', () => {
  it('stops the rest, runs the post-thaw of those before it in reverse, and says which hook failed how', async () => {
    for (const name of ['10-a', '20-b', '40-d']) hook(name);
    hook('30-c', '[ "$1" = pre-freeze ] && exit 3; exit 0');
    const hooks = await load({ postThaw: `echo cmd post >> ${log}` });
    const error = await failure(hooks.preFreeze(context));
    expect(error).toBeInstanceOf(DmsnapError);
    expect(error.code).toBe('ERR_DMSNAP_HOOK_FAILED');
    expect(error.message).toBe(`pre-freeze hook ${join(dir, '30-c')} exited with status 3; the post-thaw of the 2 hooks before it ran; nothing was changed`);
    expect(logged()).toEqual(['10-a pre-freeze', '20-b pre-freeze', '30-c pre-freeze', '20-b post-thaw', '10-a post-thaw']);
    await hooks.postThaw(context); // already done: nothing runs again
    expect(logged()).toHaveLength(5);
  });

  it('is a callback that throws, as well', async () => {
    hook('10-a');
    const thrown = new Error('the database is busy');
    const hooks = await load({ preFreeze: () => Promise.reject(thrown) });
    const error = await failure(hooks.preFreeze(context));
    expect(error).toMatchObject({ code: 'ERR_DMSNAP_HOOK_FAILED', cause: thrown });
    expect(error.message).toBe('pre-freeze callback threw: the database is busy; the post-thaw of the one hook before it ran; nothing was changed');
    expect(logged()).toEqual(['10-a pre-freeze', '10-a post-thaw']);
  });

  it('says so when a post-thaw hook fails during the undoing too', async () => {
    hook('10-a', '[ "$1" = post-thaw ] && exit 4; exit 0');
    const hooks = await load({ preFreeze: 'kill -SEGV $$' });
    const error = await failure(hooks.preFreeze(context));
    expect(error.message).toBe(`pre-freeze command "kill -SEGV $$" was killed by SIGSEGV; then 1 post-thaw hook failed: post-thaw hook ${join(dir, '10-a')} exited with status 4; nothing was changed`);
  });

  it('is a hook that cannot be started, as well', async () => {
    const path = join(dir, '10-broken');
    writeFileSync(path, '#!/nonexistent/interpreter\n');
    chmodSync(path, 0o755);
    const error = await failure((await load()).preFreeze(context));
    expect(error.message).toMatch(new RegExp(`^pre-freeze hook ${path} could not be started: spawn ${path} ENOENT; nothing was changed$`));
  });

  it('cannot run again', async () => {
    const hooks = await load({ preFreeze: 'true' });
    await hooks.preFreeze(context);
    await expect(hooks.preFreeze(context)).rejects.toThrow('run once');
  });
});

describe('a hook past its time limit', () => {
  it('is killed with SIGTERM, with all it started', async () => {
    hook('10-hang', `echo $$ > ${base}/pid; sleep 60 & echo $! > ${base}/child; wait`);
    const hooks = await load({ timeoutMs: 300 });
    const started = Date.now();
    const error = await failure(hooks.preFreeze(context));
    // Under 2.3 s where init reaps the children at once; where it does not, their zombies hold the group until SIGKILL.
    expect(Date.now() - started).toBeLessThan(5000);
    expect(error.message).toBe(`pre-freeze hook ${join(dir, '10-hang')} timed out after 0.3 s and was killed; nothing was changed`);
    expect(() => process.kill(Number(readFileSync(join(base, 'pid'), 'utf8')), 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
    expect(await waitGone(Number(readFileSync(join(base, 'child'), 'utf8')))).toBe(true);
  });

  it('is killed with SIGKILL 2 s later when it ignores SIGTERM', async () => {
    hook('10-deaf', `trap '' TERM; echo $$ > ${base}/pid; sleep 60 & echo $! > ${base}/child; while :; do wait; done`);
    const hooks = await load({ postThaw: `echo cmd post >> ${log}`, timeoutMs: 300 });
    const started = Date.now();
    const error = await failure(hooks.preFreeze(context));
    expect(Date.now() - started).toBeGreaterThanOrEqual(2300);
    expect(Date.now() - started).toBeLessThan(8000);
    expect(error.message).toMatch(/10-deaf timed out after 0\.3 s and was killed; nothing was changed$/);
    expect(() => process.kill(Number(readFileSync(join(base, 'pid'), 'utf8')), 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
    expect(await waitGone(Number(readFileSync(join(base, 'child'), 'utf8')))).toBe(true);
    expect(logged()).toEqual(['10-deaf pre-freeze']); // the failed unit's own post-thaw does not run
  }, 20_000);

  it('is a callback reported as timed out, which cannot be stopped', async () => {
    const hooks = await FreezeHooks.load({ hookDir: false, preFreeze: () => new Promise<void>(() => undefined), timeoutMs: 300 });
    const error = await failure(hooks.preFreeze(context));
    expect(error.message).toBe('pre-freeze callback timed out after 0.3 s (a callback cannot be stopped: it may still be running); nothing was changed');
  });
});

describe('post-thaw', () => {
  it('runs every hook even when some fail, once, and names every failed one', async () => {
    hook('10-a', '[ "$1" = post-thaw ] && exit 1; exit 0');
    hook('20-b');
    hook('30-c', '[ "$1" = post-thaw ] && exit 2; exit 0');
    const thrown = new Error('cannot resume');
    const hooks = await load({ postThaw: () => Promise.reject(thrown) });
    await hooks.preFreeze(context);
    const first = hooks.postThaw(context);
    const second = hooks.postThaw(context);
    expect(second).toBe(first);
    const error = await failure(first);
    expect(error.code).toBe('ERR_DMSNAP_HOOK_FAILED');
    expect(error.cause).toBe(thrown);
    expect(error.message).toBe(
      `3 post-thaw hooks failed: post-thaw callback threw: cannot resume; post-thaw hook ${join(dir, '30-c')} exited with status 2; ` +
        `post-thaw hook ${join(dir, '10-a')} exited with status 1`,
    );
    await failure(hooks.postThaw(context));
    expect(logged().slice(3)).toEqual(['30-c post-thaw', '20-b post-thaw', '10-a post-thaw']);
  });

  it('runs nothing when no pre-freeze ran, and waits for one under way', async () => {
    hook('10-a', 'sleep 0.2');
    const idle = await load();
    await idle.postThaw(context);
    expect(logged()).toEqual([]);
    const hooks = await load();
    const pre = hooks.preFreeze(context);
    await hooks.postThaw(context);
    await pre;
    expect(logged()).toEqual(['10-a pre-freeze', '10-a post-thaw']);
  });
});

describe('the hook directory', () => {
  const refused = async (options: FreezeHookOptions = {}) => {
    const error = await failure(load(options));
    expect(error.code).toBe('ERR_DMSNAP_HOOK_FAILED');
    return error.message;
  };

  it('is refused when other users can write to it, sticky or not', async () => {
    hook('10-a');
    chmodSync(dir, 0o777);
    expect(await refused()).toBe(`unsafe hook directory ${dir}: ${dir} is owned by uid ${process.geteuid!()}, mode 0777, so another user could add or replace hooks; chown root ${dir} and chmod go-w ${dir}`);
    chmodSync(dir, 0o1777);
    expect(await refused()).toContain('mode 1777');
    chmodSync(dir, 0o775);
    expect(await refused()).toContain('mode 0775');
    expect(logged()).toEqual([]);
  });

  it('refuses a group-writable, a non-executable or a non-regular entry, before any hook runs', async () => {
    hook('10-a');
    const writable = hook('20-w', '', 0o775);
    expect(await refused()).toBe(`unsafe hook ${writable}: it is owned by uid ${process.geteuid!()}, mode 0775, so another user could change what it runs; chown root and chmod go-w it, or remove it`);
    chmodSync(writable, 0o644);
    expect(await refused()).toBe(`hook ${writable} is not executable (owned by uid ${process.geteuid!()}, mode 0644); chmod +x it, or move it out of the hook directory`);
    rmSync(writable);
    mkdirSync(join(dir, '30-sub'));
    expect(await refused()).toMatch(/30-sub is not a regular file/);
    expect(logged()).toEqual([]);
  });

  it('accepts a symlink to a trusted executable, and runs its target', async () => {
    mkdirSync(join(base, 'bin'), { mode: 0o755 });
    const target = hook('tool', '', 0o755, join(base, 'bin'));
    symlinkSync(target, join(dir, '10-tool'));
    symlinkSync('../bin/tool', join(dir, '20-relative'));
    const hooks = await load();
    await hooks.preFreeze(context);
    expect(logged()).toEqual(['tool pre-freeze', 'tool pre-freeze']);
    chmodSync(join(base, 'bin'), 0o777);
    expect(await refused()).toContain(`${join(base, 'bin')} is owned by uid ${process.geteuid!()}, mode 0777, so another user can rename what is inside it`);
    rmSync(join(dir, '10-tool'));
    symlinkSync(join(base, 'missing'), join(dir, '10-tool'));
    chmodSync(join(base, 'bin'), 0o755);
    expect(await refused()).toContain(`${join(base, 'missing')} does not exist`);
  });

  (asRoot ? it : it.skip)('refuses an entry, or a symlink, another user owns (as root)', async () => {
    const other = hook('10-other');
    chownSync(other, NOBODY, NOBODY);
    expect(await refused()).toContain(`owned by uid ${NOBODY}, mode 0755, so another user could change what it runs`);
    rmSync(other);
    symlinkSync(hook('tool', '', 0o755, base), join(dir, '10-link'));
    lchownSync(join(dir, '10-link'), NOBODY, NOBODY);
    expect(await refused()).toContain(`is a symbolic link owned by uid ${NOBODY}`);
  });

  it('refuses a named directory that does not exist; the default one missing means no hooks', async () => {
    expect(await refused({ hookDir: join(base, 'nowhere') })).toBe(`hook directory ${join(base, 'nowhere')} does not exist; create it (owned by root, mode 0755) or name another`);
    expect((await FreezeHooks.load({ hookDir: false })).empty).toBe(true);
    expect((await FreezeHooks.load({ hookDir: false, postThaw: 'true' })).empty).toBe(false);
    expect((await load()).empty).toBe(true);
    if (!existsSync(DEFAULT_HOOK_DIR)) expect((await FreezeHooks.load()).empty).toBe(true);
  });
});

describe('options', () => {
  it.each<[string, FreezeHookOptions, string, string]>([
    ['timeoutMs 0', { timeoutMs: 0 }, 'ERR_INVALID_ARG_VALUE', 'timeoutMs must be an integer from 1 to 3600000; got 0'],
    ['timeoutMs 1.5', { timeoutMs: 1.5 }, 'ERR_INVALID_ARG_VALUE', 'timeoutMs must be an integer from 1 to 3600000; got 1.5'],
    ['timeoutMs Infinity', { timeoutMs: Infinity }, 'ERR_INVALID_ARG_VALUE', 'timeoutMs must be an integer from 1 to 3600000; got Infinity'],
    ['timeoutMs over an hour', { timeoutMs: 3_600_001 }, 'ERR_INVALID_ARG_VALUE', 'got 3600001'],
    ['timeoutMs a string', { timeoutMs: '300' as never }, 'ERR_INVALID_ARG_VALUE', 'timeoutMs must be an integer from 1 to 3600000; got "300"'],
    ['an empty preFreeze', { preFreeze: ' ' }, 'ERR_INVALID_ARG_VALUE', 'preFreeze must be a non-empty shell command without NUL bytes; got " "'],
    ['a number postThaw', { postThaw: 42 as never }, 'ERR_INVALID_ARG_TYPE', 'postThaw must be a shell command (a string) or a function; got a number'],
    ['a relative hookDir', { hookDir: 'hooks.d' }, 'ERR_INVALID_ARG_VALUE', 'hookDir must be an absolute path without NUL bytes, or false; got "hooks.d"'],
    ['hookDir true', { hookDir: true as never }, 'ERR_INVALID_ARG_TYPE', 'hookDir must be an absolute path or false; got a boolean'],
    ['an output without write', { output: {} as never }, 'ERR_INVALID_ARG_VALUE', 'output must be a writable stream; got a object'],
  ])('refuses %s', async (_, options, code, message) => {
    const error = await failure(FreezeHooks.load(options));
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(error.code).toBe(code);
    expect(error.message).toContain(message);
  });

  it('refuses a context without names', async () => {
    const hooks = await FreezeHooks.load({ hookDir: false, preFreeze: 'true' });
    await expect(hooks.preFreeze({ origins: 'md2' } as never)).rejects.toThrow(InvalidArgumentError);
  });
});
