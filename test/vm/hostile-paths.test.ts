/**
 * A local user who can write to /tmp or /run/lock cannot steer dmsnap: a lock directory
 * or mount directory that another user controls is refused before any side effect
 * (nothing is created, device-mapper state is unchanged), and the guardian never opens a
 * lock file through a symlink or acts on a lock that is not the one dmsnap held.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { cli, createLoopDevice, dmsetup, dmsetupState, run } from './support/system';

const MiB = 1024 * 1024;
const name = `hostile${process.pid}`;
// Only root may create files in /run (the VM's /etc is on its read-only root).
const pwned = `/run/dmsnap-pwned-${process.pid}`;
let disk: string;
let cow: string;

/** Runs a shell snippet as nobody (uid/gid 65534, no groups). */
function asNobody(script: string): void {
  run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'sh', '-c', script]);
}

/** A directory under /tmp made by nobody, holding NAME.lock -> /run/dmsnap-pwned-PID. */
function hostileLockDir(): string {
  const dir = `/tmp/dmsnap-hostile-${process.pid}-${Math.random().toString(36).slice(2)}`;
  asNobody(`mkdir -m 0777 ${dir} && ln -s ${pwned} ${dir}/${name}.lock`);
  return dir;
}

function expectRefused(result: { status: number | null; stdout: string; stderr: string }, path: RegExp) {
  expect({ pwnedCreated: existsSync(pwned), status: result.status, stdout: result.stdout }).toEqual({ pwnedCreated: false, status: 1, stdout: '' });
  expect(result.stderr).toMatch(path);
  expect(result.stderr).toMatch(/owned by uid 65534/);
  expect(result.stderr).toMatch(/DMSNAP_LOCK_DIR/);
}

describe('paths another user controls', () => {
  beforeAll(() => {
    disk = createLoopDevice(32 * MiB);
    run('mkfs.ext4', ['-q', disk]);
    cow = createLoopDevice(8 * MiB);
  });

  afterEach(() => rmSync(pwned, { force: true }));

  afterAll(() => {
    cli(['drop', name]);
    cli(['release', name]);
  });

  it('refuses a lock directory made by another user, holding a symlinked lock file', () => {
    const dir = hostileLockDir();
    const before = dmsetupState();
    const result = cli(['prepare', disk, '--name', name], { env: { DMSNAP_LOCK_DIR: dir } });
    expectRefused(result, new RegExp(dir));
    expect(dmsetupState()).toBe(before);
  });

  it('refuses a /run/lock/dmsnap made by another user in a world-writable /run/lock', () => {
    // On Debian /run/lock is a sticky, world-writable directory (mode 1777).
    const saved = `/run/lock/dmsnap.saved-${process.pid}`;
    const lockMode = statSync('/run/lock').mode & 0o7777;
    const hadDir = existsSync('/run/lock/dmsnap');
    if (hadDir) renameSync('/run/lock/dmsnap', saved);
    chmodSync('/run/lock', 0o1777);
    try {
      asNobody(`mkdir -m 0777 /run/lock/dmsnap && ln -s ${pwned} /run/lock/dmsnap/${name}.lock`);
      const before = dmsetupState();
      const env = { ...process.env };
      delete env.DMSNAP_LOCK_DIR;
      const result = spawnSync(process.execPath, ['dist/dmsnap.js', 'prepare', disk, '--name', name], { encoding: 'utf8', env });
      expectRefused({ status: result.status, stdout: result.stdout, stderr: result.stderr }, /\/run\/lock\/dmsnap/);
      expect(dmsetupState()).toBe(before);
    } finally {
      rmSync('/run/lock/dmsnap', { recursive: true, force: true });
      if (hadDir) renameSync(saved, '/run/lock/dmsnap');
      chmodSync('/run/lock', lockMode);
    }
  });

  describe('with a prepared origin', () => {
    const safeLocks = mkdtempSync('/tmp/dmsnap-locks-');
    beforeAll(() => {
      expect(cli(['prepare', disk, '--name', name], { env: { DMSNAP_LOCK_DIR: safeLocks } }).status).toBe(0);
    });

    it('refuses a lock directory in which another user holds every lock, instead of waiting', () => {
      const dir = `/tmp/dmsnap-held-${process.pid}`;
      asNobody(`mkdir -m 0755 ${dir}`);
      const holder = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'flock', join(dir, `${name}.lock`), 'sleep', '60'], {
        stdio: 'ignore',
        detached: true,
      });
      try {
        for (let i = 0; i < 50 && !existsSync(join(dir, `${name}.lock`)); i++) spawnSync('sleep', ['0.1']);
        const env = { DMSNAP_LOCK_DIR: dir, DMSNAP_LOCK_TIMEOUT: '2' };
        const before = dmsetupState();
        for (const argv of [['snapshot', name, '--cow', cow], ['recover']]) {
          const result = cli(argv, { env });
          expectRefused(result, new RegExp(dir));
          expect(result.stderr).not.toMatch(/another dmsnap process/);
        }
        expect(dmsetupState()).toBe(before);
      } finally {
        process.kill(-holder.pid!, 'SIGKILL');
      }
    });

    it.each([
      // In a directory another user owns (not sticky, so the kernel follows the symlink).
      ['in a directory another user owns', (link: string) => `mkdir -m 0777 ${link}-dir && ln -s VICTIM ${link}-dir/mnt`, (link: string) => `${link}-dir/mnt`, /-dir is owned by uid 65534/],
      // Directly in /tmp (sticky: protected_symlinks also stops root from following it).
      ['in /tmp', (link: string) => `ln -s VICTIM ${link}`, (link: string) => link, /is a symbolic link owned by uid 65534/],
    ])('refuses a mount directory that is a symlink another user made %s, before the snapshot', (_where, make, mountDir, problem) => {
      const victim = mkdtempSync('/tmp/dmsnap-victim-');
      const link = `/tmp/dmsnap-mnt-${process.pid}-${Math.random().toString(36).slice(2)}`;
      asNobody(make(link).replace('VICTIM', victim));
      const ran = `/tmp/dmsnap-ran-${process.pid}`;
      const before = dmsetupState();
      const result = cli(['backup', name, '--cow', cow, '--mount-dir', mountDir(link), '--', 'sh', '-c', `cat /proc/self/mountinfo > ${ran}`], {
        env: { DMSNAP_LOCK_DIR: safeLocks },
      });
      const mountinfo = existsSync(ran) ? readFileSync(ran, 'utf8') : '';
      rmSync(ran, { force: true });
      expect({ status: result.status, mountedOnVictim: mountinfo.includes(victim) }).toEqual({ status: 1, mountedOnVictim: false });
      expect(result.stderr).toMatch(new RegExp(`unsafe mount directory ${mountDir(link)}: .*`));
      expect(result.stderr).toMatch(problem);
      expect(result.stderr).not.toMatch(/frozen/); // refused before the snapshot
      expect(dmsetupState()).toBe(before);
      expect(lstatSync(mountDir(link)).isSymbolicLink()).toBe(true);
    });

    it('mounts on a safe mount directory it creates, through its verified descriptor', () => {
      const dir = join(mkdtempSync('/tmp/dmsnap-safe-'), 'sub', 'mnt');
      const seen = `/tmp/dmsnap-seen-${process.pid}`;
      const result = cli(['backup', name, '--cow', cow, '--mount-dir', dir, '--', 'sh', '-c', `cat /proc/self/mountinfo > ${seen}`], {
        env: { DMSNAP_LOCK_DIR: safeLocks },
      });
      expect(result.status).toBe(0);
      const mountinfo = readFileSync(seen, 'utf8');
      rmSync(seen);
      // Field 5 is the mount point: the snapshot was mounted on dir itself, read-only.
      const line = mountinfo.split('\n').find((l) => l.split(' ')[4] === dir);
      expect(line).toMatch(/ ro,/);
      expect(statSync(dir).mode & 0o7777).toBe(0o700);
      expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(` ${dir} `);
    });

    it('refuses a mount directory inside a directory another user owns', () => {
      const parent = `/tmp/dmsnap-mntparent-${process.pid}`;
      asNobody(`mkdir -m 0755 ${parent}`);
      const before = dmsetupState();
      const result = cli(['backup', name, '--cow', cow, '--mount-dir', `${parent}/mnt`, '--', 'true'], { env: { DMSNAP_LOCK_DIR: safeLocks } });
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(new RegExp(`${parent}.*owned by uid 65534`));
      expect(existsSync(`${parent}/mnt`)).toBe(false);
      expect(dmsetupState()).toBe(before);
    });

    it('the guardian opens no symlinked lock and acts only on the lock dmsnap held', () => {
      // The guardian of a suspended origin whose dmsnap process died, run by hand.
      const guardian = (lockPath: string, lockId: string) => {
        dmsetup('suspend', name);
        const uuid = dmsetup('info', '-c', '--noheadings', '-o', 'uuid', name).trim();
        const child = spawnSync('build/Release/dmsnap-guardian', ['/dev/mapper/control', uuid, lockPath, lockId], {
          encoding: 'utf8',
          input: '', // end of file at once: "dmsnap died"
          timeout: 60_000,
        });
        const suspended = /SUSPENDED/.test(dmsetup('info', name));
        if (suspended) dmsetup('resume', name);
        return { status: child.status, stderr: child.stderr, suspended };
      };
      const dir = hostileLockDir();
      const linked = guardian(join(dir, `${name}.lock`), '1:1');
      expect(existsSync(pwned)).toBe(false);
      expect(linked.status).toBe(1);
      expect(linked.stderr).toMatch(/lock/);

      // A regular lock file in a safe directory, but not the file dmsnap held (another inode).
      const lock = join(safeLocks, `${name}.lock`);
      const { dev, ino } = statSync(lock, { bigint: true });
      const other = guardian(lock, `${dev}:${ino + 1n}`);
      expect(other).toMatchObject({ status: 1, suspended: true });
      expect(other.stderr).toMatch(/not the lock/);

      const same = guardian(lock, `${dev}:${ino}`);
      expect(same).toMatchObject({ status: 0, suspended: false });
      expect(same.stderr).toMatch(/resumed/);
    });

    it('the guardian never acts while another process holds the lock, and leaves once the origin is resumed', async () => {
      const lock = join(safeLocks, `${name}.lock`);
      const { dev, ino } = statSync(lock, { bigint: true });
      const holder = spawn('flock', [lock, 'sleep', '60'], { stdio: 'ignore', detached: true });
      try {
        await new Promise((r) => setTimeout(r, 500));
        dmsetup('suspend', name);
        const uuid = dmsetup('info', '-c', '--noheadings', '-o', 'uuid', name).trim();
        const child = spawn('build/Release/dmsnap-guardian', ['/dev/mapper/control', uuid, lock, `${dev}:${ino}`], { stdio: ['pipe', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
        const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
        // "dmsnap died", once the guardian said it is ready (it writes "R" on this socket first).
        await new Promise((r) => setTimeout(r, 500));
        child.stdin!.end();
        await new Promise((r) => setTimeout(r, 2000));
        expect(dmsetup('info', name)).toMatch(/SUSPENDED/);
        expect({ exitCode: child.exitCode, stderr }).toEqual({ exitCode: null, stderr: '' });
        dmsetup('resume', name); // the lock holder resumes it, as recover would
        const soon = new Promise<string>((resolve) => setTimeout(() => resolve('still waiting after 1.5 s'), 1500));
        expect(await Promise.race([exited, soon])).toBe(0);
      } finally {
        process.kill(-holder.pid!, 'SIGKILL');
        if (/SUSPENDED/.test(dmsetup('info', name))) dmsetup('resume', name);
      }
    });
  });
});
