/**
 * Directories that only root controls. dmsnap runs as root and keeps its lock files in, and
 * mounts snapshots on, directories it reaches by path; a path through a directory another
 * user can write to (without the sticky bit), through a symlink another user owns, or onto
 * a directory another user owns inside a sticky one, could be swapped under it between the
 * check and the use. These checks walk the path from "/" and refuse such a path.
 *
 * A component is trusted when it is owned by root (or the effective uid) and either not
 * writable by group and others, or sticky (then only its owner, root, and the owner of an
 * entry can rename that entry). A symlink is followed only when a trusted user owns it; the
 * walk goes on from its target.
 */
import { lstatSync, mkdirSync, readlinkSync, type Stats } from 'node:fs';
import { resolve } from 'node:path';
import { DmsnapError, type DmsnapOwnCode } from '../errors';

const S_ISVTX = 0o1000;
const MAX_SYMLINKS = 40;

/** What a refusal says and which code it carries. */
export interface PathRules {
  /** What the directory is for, e.g. 'lock directory'. */
  what: string;
  /** The advice at the end of the message: what to do instead. */
  advice: string;
  /** The error code, e.g. 'ERR_DMSNAP_UNSAFE_LOCK_DIR'. */
  code: DmsnapOwnCode;
  /**
   * The directory itself must be owned by the effective uid and writable by nobody else
   * (the lock directory). Otherwise root or the effective uid must own it (a mount point).
   */
  private: boolean;
  /** Create missing directories (mode 0700); default true. When false, a missing one is refused. */
  create?: boolean;
  /**
   * dmsnap creates and deletes files in the directory (a COW file's): like every parent, it
   * must be writable by no one else, or sticky.
   */
  holdsFiles?: boolean;
}

function euid(): number {
  return process.geteuid?.() ?? 0;
}

function trustedOwner(st: Stats): boolean {
  return st.uid === 0 || st.uid === euid();
}

/** "owned by uid 65534, mode 0777". */
export function describeStat(st: Stats): string {
  return `owned by uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}`;
}

function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

/** Creates `path` (mode 0700) unless it exists; someone else creating it first is not an error. */
function makeDir(path: string): Stats {
  try {
    mkdirSync(path, { mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  return lstatSync(path); // checked again by the caller, whoever created it
}

/**
 * Checks every component of the absolute, symlink-free `path` up to but excluding the last;
 * creates missing ones. Returns the path of the parent with trusted symlinks resolved.
 */
function trustedParent(dir: string, rules: PathRules, fail: (message: string) => never): string {
  let pending = dir.split('/').filter(Boolean);
  let current = '/';
  let hops = 0;
  const root = lstatSync('/');
  if (!trustedOwner(root) || (root.mode & 0o022) !== 0) fail(`/ is ${describeStat(root)}`);
  while (pending.length > 1) {
    const [part, ...rest] = pending;
    const next = resolve(current, part);
    const st = lstatOrNull(next) ?? (rules.create === false ? fail(`${next} does not exist`) : makeDir(next));
    if (st.isSymbolicLink()) {
      if (!trustedOwner(st)) fail(`${next} is a symbolic link ${describeStat(st)}, which that user can point anywhere`);
      if (++hops > MAX_SYMLINKS) fail(`${next}: too many levels of symbolic links`);
      const target = resolve(current, readlinkSync(next));
      pending = [...target.split('/').filter(Boolean), ...rest];
      current = '/';
      continue;
    }
    if (!st.isDirectory()) fail(`${next} is not a directory`);
    if (!trustedOwner(st)) fail(`${next} is ${describeStat(st)}: that user can replace what is inside it`);
    if ((st.mode & 0o022) !== 0 && (st.mode & S_ISVTX) === 0) {
      fail(`${next} is ${describeStat(st)}: writable by other users, and not sticky, so they can rename what is inside it`);
    }
    current = next;
    pending = rest;
  }
  return resolve(current, pending[0] ?? '.');
}

/**
 * Makes sure `path` is a directory that only root controls, creating it (and missing parents)
 * with mode 0700; returns its path with trusted symlinks of its parents resolved. Throws a
 * DmsnapError with `rules.code` naming the path, what is wrong and what to do, before
 * anything else is created.
 */
export function ensureTrustedDirectory(path: string, rules: PathRules): string {
  const absolute = resolve(path);
  const fail = (problem: string): never => {
    throw new DmsnapError(`unsafe ${rules.what} ${absolute}: ${problem}; ${rules.advice}`, rules.code);
  };
  const dir = trustedParent(absolute, rules, fail);
  if (dir === '/') fail('/ cannot be used');
  const st = lstatOrNull(dir) ?? (rules.create === false ? fail(`${dir} does not exist`) : makeDir(dir));
  if (st.isSymbolicLink()) fail(`${dir} is a symbolic link ${describeStat(st)}`);
  if (!st.isDirectory()) fail(`${dir} is not a directory`);
  if (rules.private) {
    if (st.uid !== euid() || (st.mode & 0o022) !== 0) fail(`${dir} is ${describeStat(st)}, not a directory of uid ${euid()} that only it can write to`);
  } else if (!trustedOwner(st)) {
    fail(`${dir} is ${describeStat(st)}: that user can rename or replace it`);
  } else if (rules.holdsFiles && (st.mode & 0o022) !== 0 && (st.mode & S_ISVTX) === 0) {
    fail(`${dir} is ${describeStat(st)}: writable by other users, and not sticky, so they can rename what is inside it`);
  }
  return dir;
}

/**
 * Checks (creating it, mode 0700, if missing) a directory to mount a snapshot on; returns
 * its path. Throws ERR_DMSNAP_UNSAFE_MOUNT_DIR if another user could swap it, or any of
 * its parents, for a symlink (to /etc, say) before the mount.
 */
export function ensureMountDir(dir: string): string {
  return ensureTrustedDirectory(dir, {
    what: 'mount directory',
    advice:
      'name a directory that root owns, whose every parent root owns and only root can write to ' +
      '(or is sticky, as /tmp), or leave the mount directory out to use a new one under /tmp',
    code: 'ERR_DMSNAP_UNSAFE_MOUNT_DIR',
    private: false,
  });
}
