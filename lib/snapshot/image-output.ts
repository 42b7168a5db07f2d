/**
 * Where an image is written. The output is checked and opened before the snapshot is
 * taken, so a mistake costs nothing; it is never a device in the origin's stack, the COW,
 * or a file on a filesystem that lives on the origin (its writes would be copied into the
 * COW). A regular file is written to a new temporary file in its folder and renamed over
 * the target only when the image is complete and valid; devices, FIFOs and stdout are
 * written in place. On failure only that temporary file is removed.
 */
import { randomBytes } from 'node:crypto';
import { constants, fstatSync, type Stats } from 'node:fs';
import { open, realpath, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { DmsnapError, InvalidArgumentError, type ErrnoCode } from '../errors';
import { devKey, type DevNumber } from '../system/stack';

/** What the output is: a regular file (new or existing), a device, or a stream. */
export type OutputKind = 'new' | 'file' | 'block' | 'char' | 'fifo';

/** The devices an image must stay away from, as "MAJOR:MINOR" keys with what each is. */
export interface OutputGuard {
  /** Block devices the output must not be: the origin's whole stack and the COW. */
  devices: Map<string, string>;
  /** Block devices whose filesystem must not hold the output file: the origin and what is built on it. */
  filesystems: Map<string, string>;
  /** Where device-mapper's nodes are (/dev/mapper): no file is created there. */
  nodeDir: string;
}

/** The major:minor of a Linux dev_t as Node's stat reports it (glibc's encoding). */
export function decodeDev(dev: number | bigint): DevNumber {
  const d = BigInt(dev);
  const major = Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn));
  const minor = Number((d & 0xffn) | ((d >> 12n) & ~0xffn));
  return { major, minor };
}

/** The kind of an existing output (undefined: it does not exist yet); throws for one that cannot take an image. */
export function outputKind(path: string, stats: Stats | undefined): OutputKind {
  if (!stats) return 'new';
  if (stats.isFile()) return 'file';
  if (stats.isBlockDevice()) return 'block';
  if (stats.isCharacterDevice()) return 'char';
  if (stats.isFIFO()) return 'fifo';
  if (stats.isDirectory()) {
    throw new DmsnapError(`cannot write the image to ${path}: it is a directory; name a file in it, e.g. ${join(path, 'image.img')}`, 'EISDIR');
  }
  throw new DmsnapError(`cannot write the image to ${path}: it is neither a file, a device nor a FIFO`, 'ERR_INVALID_ARG_VALUE');
}

/**
 * Why the output may not be used, or undefined. `rdev` is the device an existing block
 * device output is; `dev` the device of the filesystem that holds a file output.
 */
export function outputRefusal(path: string, kind: OutputKind, ids: { rdev?: DevNumber; dev?: DevNumber }, guard: OutputGuard): string | undefined {
  if (kind === 'block' && ids.rdev) {
    const what = guard.devices.get(devKey(ids.rdev));
    if (what) return `${path} is ${what}; refusing to write the image onto it, which would overwrite the data being copied. Name a separate device or a file`;
  }
  if ((kind === 'new' || kind === 'file') && ids.dev) {
    const what = guard.filesystems.get(devKey(ids.dev));
    if (what) {
      return (
        `${path} is on the filesystem on the origin (${what}); refusing: every block written there is first copied ` +
        'into the COW, which fills up, and the origin cannot hold an image of itself. Write the image to another filesystem'
      );
    }
  }
  if (kind !== 'block' && dirname(path) === guard.nodeDir) {
    return `${path} is not a device, and ${guard.nodeDir} holds device-mapper's nodes (the snapshot appears there); refusing to create a file in it. Write the image elsewhere`;
  }
  return undefined;
}

/** How an image is to be written; see openImageOutput. */
export interface OutputRequest {
  /** The output path, or a stream (stdout) with its file descriptor when it has one. */
  target: string | { stream: NodeJS.WritableStream; fd?: number };
  guard: OutputGuard;
  /** The image's size: a block device output must be at least this large. */
  sizeBytes: number;
  /** Sparse images need a regular file. */
  sparse?: boolean;
  /** The size of a block device (BLKGETSIZE64). */
  deviceSize: (path: string) => Promise<number>;
}

/** An opened output: write to `handle` (or `stream`), then `commit` or `discard`. */
export interface ImageOutput {
  kind: OutputKind | 'stream';
  /** The path as resolved (symbolic links followed), or "stdout". */
  path: string;
  handle?: FileHandle;
  stream?: NodeJS.WritableStream;
  /** The temporary file written instead of a regular file, renamed over it by commit. */
  temporary?: string;
  /** Makes the image durable and puts it in place (renames the temporary file). */
  commit(): Promise<void>;
  /** Closes the output and removes the temporary file, if any; nothing else is removed. */
  discard(): Promise<void>;
}

function refuse(message: string | undefined): void {
  if (message) throw new DmsnapError(message, 'ERR_DMSNAP_OUTPUT_IN_ORIGIN');
}

async function statOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError(path, error);
  }
}

/** The errno name of a failed fs call ('EIO' if it has none). */
function fsCode(error: unknown): ErrnoCode {
  const code = (error as NodeJS.ErrnoException).code;
  return code?.startsWith('E') ? (code as ErrnoCode) : 'EIO';
}

function ioError(path: string, error: unknown): DmsnapError {
  const code = fsCode(error);
  return new DmsnapError(`cannot write the image to ${path}: ${(error as Error).message}`, code, { cause: error });
}

/** Resolves symbolic links of an existing path, or of the folder of a new one. */
async function resolveOutput(path: string): Promise<string> {
  const absolute = resolve(path);
  try {
    return await realpath(absolute);
  } catch {
    try {
      return join(await realpath(dirname(absolute)), basename(absolute));
    } catch (error) {
      const code = fsCode(error);
      throw new DmsnapError(`cannot write the image to ${path}: its folder ${dirname(absolute)} does not exist or cannot be read (${code}); create it first`, code, { cause: error });
    }
  }
}

function streamOutput(stream: NodeJS.WritableStream, fd: number | undefined, guard: OutputGuard): ImageOutput {
  if (fd !== undefined) {
    // stdout redirected to a device or file: the same rules as for --output.
    const stats = fstatSync(fd);
    const kind = stats.isBlockDevice() ? 'block' : stats.isFile() ? 'file' : 'fifo';
    refuse(outputRefusal('stdout', kind, { rdev: decodeDev(stats.rdev), dev: decodeDev(stats.dev) }, { ...guard, nodeDir: '\0' }));
  }
  return { kind: 'stream', path: 'stdout', stream, commit: async () => undefined, discard: async () => undefined };
}

/**
 * Checks the output and opens it, before any snapshot exists: a regular file (new or
 * existing) gets a new temporary file `.NAME.dmsnap-XXXX` (mode 0600: an image holds every
 * file of the filesystem, whoever may read them) in the same folder; a block device is
 * opened exclusively (not mounted, not held) and must be large enough; a character device
 * or an existing FIFO is opened for writing as it is. Nothing is created but that file.
 */
export async function openImageOutput(request: OutputRequest): Promise<ImageOutput> {
  const { target, guard } = request;
  if (typeof target !== 'string') {
    if (request.sparse) throw new InvalidArgumentError('--sparse needs a regular file, not stdout');
    return streamOutput(target.stream, target.fd, guard);
  }
  const path = await resolveOutput(target);
  const stats = await statOrUndefined(path);
  const kind = outputKind(path, stats);
  if (request.sparse && kind !== 'new' && kind !== 'file') {
    throw new InvalidArgumentError(`--sparse needs a regular file; ${path} is a ${kind === 'block' ? 'block device' : kind === 'char' ? 'character device' : 'FIFO'}`);
  }
  if (kind === 'new' || kind === 'file') {
    const folder = await stat(dirname(path)).catch((error: unknown) => {
      throw ioError(path, error);
    });
    refuse(outputRefusal(path, kind, { dev: decodeDev(folder.dev) }, guard));
    return openTemporary(path, kind);
  }
  refuse(outputRefusal(path, kind, { rdev: decodeDev(stats!.rdev) }, guard));
  if (kind === 'block') {
    const size = await request.deviceSize(path);
    if (size < request.sizeBytes) {
      throw new DmsnapError(`${path} has ${size} bytes, less than the image's ${request.sizeBytes}; name a larger device`, 'ENOSPC');
    }
  }
  // Never O_CREAT: a node that vanished since the check is not replaced by a new file.
  // O_EXCL on a block device: the open fails while it is mounted or held.
  const flags = constants.O_WRONLY | (kind === 'block' ? constants.O_EXCL : 0);
  const handle = await open(path, flags).catch((error: unknown) => {
    if ((error as NodeJS.ErrnoException).code === 'EBUSY') {
      throw new DmsnapError(`cannot write the image to ${path}: it is in use (mounted, or held by md, device-mapper or another program); name an unused device`, 'EBUSY', { cause: error });
    }
    throw ioError(path, error);
  });
  const opened = await handle.stat();
  if (opened.rdev !== stats!.rdev || opened.ino !== stats!.ino) {
    await handle.close();
    throw new DmsnapError(`${path} changed while it was being opened; try again`, 'EAGAIN');
  }
  return { kind, path, handle, commit: () => handle.close(), discard: () => handle.close().catch(() => undefined) };
}

async function openTemporary(path: string, kind: OutputKind): Promise<ImageOutput> {
  const temporary = join(dirname(path), `.${basename(path)}.dmsnap-${randomBytes(4).toString('hex')}`);
  const handle = await open(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600).catch((error: unknown) => {
    throw ioError(path, error);
  });
  let closed = false;
  let committed = false;
  const close = async () => {
    if (!closed) {
      closed = true;
      await handle.close();
    }
  };
  return {
    kind,
    path,
    handle,
    temporary,
    async commit() {
      await handle.sync();
      await close();
      await rename(temporary, path).catch((error: unknown) => {
        throw ioError(path, error);
      });
      committed = true;
      // The rename itself is durable once the folder is synced.
      const folder = await open(dirname(path), constants.O_RDONLY);
      try {
        await folder.sync();
      } finally {
        await folder.close();
      }
    },
    async discard() {
      await close().catch(() => undefined);
      if (!committed) await unlink(temporary).catch(() => undefined);
    },
  };
}
