/**
 * The lock directory and lock files must be root's alone, and a mount directory must not be
 * swappable by another user: each refusal, on real files (jest runs as root, so the files
 * can be given to nobody, uid 65534).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, linkSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync, lchownSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBinding, type NativeBinding } from '../../lib/native';
import { ensureMountDir } from '../../lib/safety/paths';
import { checkLockDir, lockOrigin } from '../../lib/system/lock';
import { addonMissing } from '../support/addon';

const NOBODY = 65534;
const asRoot = process.geteuid?.() === 0;
/** describe when root (and, for the lock tests, flock through the addon), else describe.skip saying why. */
const describeAsRoot = (name: string, fn: () => void, needsAddon = false) => {
  const reason = !asRoot ? 'needs root' : needsAddon ? addonMissing : undefined;
  if (reason) describe.skip(`${name} [skipped: ${reason}]`, fn);
  else describe(name, fn);
};
const binding = { tryLock: (fd: number) => loadBinding().tryLock(fd) } as NativeBinding;
let base: string;

beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), 'dmsnap-lockdir-'));
});
afterEach(() => rmSync(base, { recursive: true, force: true }));

const refusal = (fn: () => unknown) => {
  try {
    fn();
  } catch (error) {
    return error as Error & { code: string };
  }
  throw new Error('not refused');
};
const refusedLock = async (lockDir: string) => {
  try {
    (await lockOrigin(binding, 'o', { lockDir, lockTimeoutMs: 0 }))();
  } catch (error) {
    return error as Error & { code: string };
  }
  throw new Error('not refused');
};

describeAsRoot('lock directory', () => {
  it('is created with mode 0700 (with missing parents) and accepted', async () => {
    const dir = join(base, 'a', 'locks');
    expect(checkLockDir({ lockDir: dir })).toBe(dir);
    expect(statSync(dir).mode & 0o7777).toBe(0o700);
    expect(statSync(dir).uid).toBe(0);
    const release = await lockOrigin(binding, 'o', { lockDir: dir });
    const st = statSync(join(dir, 'o.lock'), { bigint: true });
    expect({ path: release.path, id: release.id, mode: Number(st.mode) & 0o777 }).toEqual({ path: join(dir, 'o.lock'), id: `${st.dev}:${st.ino}`, mode: 0o600 });
    await expect(lockOrigin(binding, 'o', { lockDir: dir, lockTimeoutMs: 50 })).rejects.toMatchObject({ code: 'ERR_DMSNAP_LOCKED' });
    release();
  });

  it('refuses a directory another user owns, naming it, its owner and mode, and what to do', async () => {
    const dir = join(base, 'locks');
    mkdirSync(dir, { mode: 0o700 });
    chownSync(dir, NOBODY, NOBODY);
    const error = await refusedLock(dir);
    expect(error.code).toBe('ERR_DMSNAP_UNSAFE_LOCK_DIR');
    expect(error.message).toMatch(new RegExp(`${dir} is owned by uid 65534, mode 0700.*remove it, or set DMSNAP_LOCK_DIR`));
    expect(existsSync(join(dir, 'o.lock'))).toBe(false);
  });

  it.each([0o770, 0o777, 0o1777, 0o722].map((m) => [m.toString(8), m]))('refuses a directory of mode %s (writable by others)', async (_, mode) => {
    const dir = join(base, 'locks');
    mkdirSync(dir);
    chmodSync(dir, mode);
    const error = await refusedLock(dir);
    expect(error.code).toBe('ERR_DMSNAP_UNSAFE_LOCK_DIR');
    expect(error.message).toContain(`mode ${mode.toString(8).padStart(4, '0')}`);
    expect(existsSync(join(dir, 'o.lock'))).toBe(false);
  });

  it('refuses a symlinked directory, even to a good one', async () => {
    const real = join(base, 'real');
    mkdirSync(real, { mode: 0o700 });
    symlinkSync(real, join(base, 'locks'));
    const error = await refusedLock(join(base, 'locks'));
    expect(error.code).toBe('ERR_DMSNAP_UNSAFE_LOCK_DIR');
    expect(error.message).toMatch(/is a symbolic link/);
    expect(existsSync(join(real, 'o.lock'))).toBe(false);
  });

  it('refuses a parent another user owns, or can write to without the sticky bit', async () => {
    const owned = join(base, 'owned');
    mkdirSync(owned, { mode: 0o755 });
    chownSync(owned, NOBODY, NOBODY);
    expect(refusal(() => checkLockDir({ lockDir: join(owned, 'locks') })).message).toMatch(new RegExp(`${owned} is owned by uid 65534`));
    const open = join(base, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    expect(refusal(() => checkLockDir({ lockDir: join(open, 'locks') })).message).toMatch(/writable by other users, and not sticky/);
    expect(existsSync(join(owned, 'locks')) || existsSync(join(open, 'locks'))).toBe(false);
  });

  it('accepts a sticky world-writable parent (as /run/lock) and follows a parent symlink only if root owns it', () => {
    const sticky = join(base, 'sticky');
    mkdirSync(sticky);
    chmodSync(sticky, 0o1777);
    expect(checkLockDir({ lockDir: join(sticky, 'locks') })).toBe(join(sticky, 'locks'));
    symlinkSync(sticky, join(base, 'rootlink'));
    expect(checkLockDir({ lockDir: join(base, 'rootlink', 'locks') })).toBe(join(sticky, 'locks'));
    symlinkSync(sticky, join(base, 'userlink'));
    lchownSync(join(base, 'userlink'), NOBODY, NOBODY);
    const error = refusal(() => checkLockDir({ lockDir: join(base, 'userlink', 'locks') }));
    expect(error.message).toMatch(/userlink is a symbolic link owned by uid 65534/);
  });
}, true);

describeAsRoot('lock file', () => {
  let dir: string;
  beforeEach(() => {
    dir = join(base, 'locks');
    mkdirSync(dir, { mode: 0o700 });
  });
  const refused = async (problem: RegExp) => {
    const error = await refusedLock(dir);
    expect(error.code).toBe('ERR_DMSNAP_UNSAFE_LOCK_FILE');
    expect(error.message).toMatch(new RegExp(`unsafe lock file ${join(dir, 'o.lock')}: `));
    expect(error.message).toMatch(problem);
  };

  it('refuses a symlink, and creates nothing at its target', async () => {
    const target = join(base, 'pwned');
    symlinkSync(target, join(dir, 'o.lock'));
    await refused(/symbolic link/);
    expect(existsSync(target)).toBe(false);
  });

  it('refuses a hard link to another file', async () => {
    writeFileSync(join(base, 'victim'), 'x');
    linkSync(join(base, 'victim'), join(dir, 'o.lock'));
    await refused(/2 hard links/);
  });

  it('refuses a FIFO and a directory (not regular files)', async () => {
    execFileSync('mkfifo', [join(dir, 'o.lock')]);
    await refused(/not a regular file/);
    rmSync(join(dir, 'o.lock'));
    mkdirSync(join(dir, 'o.lock'));
    await refused(/directory/);
  });

  it('refuses a file another user owns', async () => {
    writeFileSync(join(dir, 'o.lock'), '');
    chownSync(join(dir, 'o.lock'), NOBODY, NOBODY);
    await refused(/owned by uid 65534/);
  });
}, true);

describeAsRoot('mount directory', () => {
  it('creates a missing one 0700 in a sticky parent and accepts it', () => {
    const dir = join(base, 'mnt');
    chmodSync(base, 0o1777);
    expect(ensureMountDir(dir)).toBe(dir);
    expect(statSync(dir).mode & 0o7777).toBe(0o700);
  });

  it('refuses a symlink, a directory another user owns in a sticky parent, and an open parent', () => {
    chmodSync(base, 0o1777);
    mkdirSync(join(base, 'target'));
    symlinkSync(join(base, 'target'), join(base, 'link'));
    const link = refusal(() => ensureMountDir(join(base, 'link')));
    expect({ code: link.code, message: link.message }).toEqual({
      code: 'ERR_DMSNAP_UNSAFE_MOUNT_DIR',
      message: expect.stringMatching(/link is a symbolic link owned by uid 0/),
    });
    mkdirSync(join(base, 'theirs'));
    chownSync(join(base, 'theirs'), NOBODY, NOBODY);
    expect(refusal(() => ensureMountDir(join(base, 'theirs'))).message).toMatch(/theirs is owned by uid 65534.*rename or replace it/);
    mkdirSync(join(base, 'open'));
    chmodSync(join(base, 'open'), 0o777);
    expect(refusal(() => ensureMountDir(join(base, 'open', 'mnt'))).message).toMatch(/open is owned by uid 0, mode 0777: writable by other users/);
    expect(existsSync(join(base, 'open', 'mnt'))).toBe(false);
  });
});
