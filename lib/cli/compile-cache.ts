/**
 * The command line's compile cache: V8's code cache for the CLI bundle, kept per command in
 * a directory only root controls (/var/cache/dmsnap; DMSNAP_CACHE_DIR names another,
 * DMSNAP_COMPILE_CACHE=0 turns it off). A cold `dmsnap` spends as long parsing and
 * compiling its bundle as Node spends starting; with the cache, V8 deserializes the
 * functions the same command compiled last time instead.
 *
 * Code cache is code: a cache file another user could write would run as root. So the
 * directory and every parent must be trusted (lib/safety/paths.ts), the directory and the
 * file owned by the effective uid and writable by nobody else, the file opened without
 * following a symlink; anything else and the CLI runs without the cache. Root only: other
 * users run the CLI uncached. Each file starts with a header naming the bundle (size,
 * mtime, inode), Node's version and the architecture, and the SHA-256 of the data (a release
 * V8 does not verify its checksum); V8 checks its own version, flags and the source's length
 * on top of that and rejects data that does not match.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readSync, renameSync, unlinkSync, writeSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { DmsnapError } from '../errors';
import { ensureTrustedDirectory } from '../safety/paths';

/** The default cache directory. */
export const DEFAULT_CACHE_DIR = '/var/cache/dmsnap';
const MAGIC = 'dmsnap-code-cache 1\n';
const MAX_BYTES = 64 * 1024 * 1024;
const DIGEST_HEX = 64;

function digest(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Where one command's code cache is, and what its header must say. */
export interface CacheSlot {
  file: string;
  header: string;
}

/** Why the cache is not used, for DMSNAP_DEBUG; undefined when it is. */
export type CacheRefusal = string;

/** The cache directory to use, checked; or why there is none. */
export function cacheDirectory(env: NodeJS.ProcessEnv = process.env): { dir: string } | { refusal: CacheRefusal; warn: boolean } {
  if (env.DMSNAP_COMPILE_CACHE === '0') return { refusal: 'turned off by DMSNAP_COMPILE_CACHE=0', warn: false };
  if (process.geteuid?.() !== 0 && env.DMSNAP_CACHE_DIR === undefined) return { refusal: 'not root', warn: false };
  const wanted = env.DMSNAP_CACHE_DIR || DEFAULT_CACHE_DIR;
  try {
    const dir = ensureTrustedDirectory(wanted, {
      what: 'compile cache directory',
      advice: 'dmsnap runs without its compile cache; remove it, or set DMSNAP_CACHE_DIR to a directory only root controls',
      code: 'ERR_DMSNAP_UNSAFE_CACHE_DIR',
      private: true,
    });
    return { dir };
  } catch (error) {
    // A read-only /var or a missing permission is no one's fault; an unsafe directory is worth a word.
    return { refusal: (error as Error).message, warn: error instanceof DmsnapError };
  }
}

/** The slot of `command` (a word such as 'snapshot') for the bundle `bundle` stat'ed as `st`. */
export function cacheSlot(dir: string, command: string, st: Stats): CacheSlot {
  const safe = /^[a-z][a-z0-9-]{0,31}$/.test(command) ? command : 'other';
  const header = `${MAGIC}${process.version} ${process.arch} ${st.size} ${Math.trunc(st.mtimeMs)} ${st.ino}\n`;
  return { file: join(dir, `cli-${safe}.bin`), header };
}

/** The cached data in `slot`, or undefined when there is none that can be trusted and matches. */
export function readCache(slot: CacheSlot): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(slot.file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.uid !== process.geteuid?.() || (st.mode & 0o022) !== 0 || st.size > MAX_BYTES) return undefined;
    const data = Buffer.allocUnsafe(st.size);
    let got = 0;
    while (got < data.length) {
      const n = readSync(fd, data, got, data.length - got, got);
      if (n === 0) return undefined;
      got += n;
    }
    const headerBytes = Buffer.byteLength(slot.header);
    const digestEnd = headerBytes + DIGEST_HEX + 1;
    if (data.length < digestEnd || data.subarray(0, headerBytes).toString('latin1') !== slot.header) return undefined;
    const code = data.subarray(digestEnd);
    return data.subarray(headerBytes, digestEnd).toString('latin1') === `${digest(code)}\n` ? code : undefined;
  } finally {
    closeSync(fd);
  }
}

/** Writes `data` into `slot`: a new file of mode 0600, renamed over the old one. */
export function writeCache(slot: CacheSlot, data: Buffer): void {
  const temporary = `${slot.file}.${process.pid}.tmp`;
  const fd = openSync(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    const whole = Buffer.concat([Buffer.from(`${slot.header}${digest(data)}\n`, 'latin1'), data]);
    let put = 0;
    while (put < whole.length) put += writeSync(fd, whole, put, whole.length - put, put);
  } catch (error) {
    closeSync(fd);
    unlinkSync(temporary);
    throw error;
  }
  closeSync(fd);
  try {
    renameSync(temporary, slot.file);
  } catch (error) {
    unlinkSync(temporary);
    throw error;
  }
}
