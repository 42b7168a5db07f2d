/**
 * Block-level images of a snapshot: the whole device copied to a file or a stream with
 * large reads that overlap the writes, optionally leaving holes for all-zero blocks.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { DmsnapError } from '../errors';

/** Reads of 4 MiB: large and aligned, so the copy runs at the device's own speed. */
const BLOCK_BYTES = 4 * 1024 * 1024;
/** Granularity of holes in sparse images. */
const HOLE_BYTES = 64 * 1024;

/** How far copyDevice has got. */
export interface ImageProgress {
  /** Bytes read so far; the writes trail by at most one 4 MiB block. */
  bytesDone: number;
  /** The device's size in bytes. */
  bytesTotal: number;
}

/** Options of copyDevice. */
export interface ImageOptions {
  /** Leave holes for all-zero 64 KiB blocks (only for a regular file). */
  sparse?: boolean;
  /** Called after each read of up to 4 MiB. */
  onProgress?: (progress: ImageProgress) => void;
  /**
   * Stops the copy before the next read (it rejects with the signal's reason); the output
   * is left as far as it got.
   */
  signal?: AbortSignal;
}

const ZEROS = Buffer.alloc(HOLE_BYTES);

function allZero(buffer: Buffer, start: number, end: number): boolean {
  return buffer.subarray(start, end).equals(ZEROS.subarray(0, end - start));
}

export async function writeAll(handle: FileHandle, buffer: Buffer, length: number, position: number | null): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesWritten } = await handle.write(buffer, done, length - done, position === null ? null : position + done);
    done += bytesWritten;
  }
}

export function writeStream(stream: Writable, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => reject(error);
    stream.once('error', onError);
    const flushed = stream.write(chunk, (error) => {
      stream.off('error', onError);
      if (error) reject(error);
    });
    if (flushed) {
      stream.off('error', onError);
      resolve();
    } else {
      stream.once('drain', () => {
        stream.off('error', onError);
        resolve();
      });
    }
  });
}

function isFileHandle(target: string | Writable | FileHandle): target is FileHandle {
  return typeof target === 'object' && typeof (target as FileHandle).sync === 'function' && typeof (target as FileHandle).stat === 'function';
}

/** Writes one block at `at` (null: in order), leaving holes for zero runs when sparse. */
async function writeBlock(output: FileHandle, buffer: Buffer, length: number, at: number | null, sparse: boolean): Promise<void> {
  if (at === null || !sparse) return writeAll(output, buffer, length, at);
  for (let offset = 0; offset < length; offset += HOLE_BYTES) {
    const end = Math.min(offset + HOLE_BYTES, length);
    if (end - offset === HOLE_BYTES && allZero(buffer, offset, end)) continue;
    await writeAll(output, buffer.subarray(offset), end - offset, at + offset);
  }
}

/**
 * Copies the block device `source` (`sizeBytes` long) to `target`: a file path (created
 * or truncated), an open file handle (left open; written at offsets for a regular file or
 * block device, in order for a FIFO or character device), or a writable stream such as
 * stdout. Returns the bytes copied. `sparse` needs a regular file.
 */
export async function copyDevice(source: string, sizeBytes: number, target: string | Writable | FileHandle, options: ImageOptions = {}): Promise<number> {
  const input = await open(source, 'r');
  const owned = typeof target === 'string';
  let output: FileHandle | undefined;
  try {
    output = owned ? await open(target, 'w') : isFileHandle(target) ? target : undefined;
  } catch (error) {
    await input.close();
    throw error;
  }
  const kind = output ? await output.stat() : undefined;
  // Offsets only where the output has them; a pipe or tape takes the bytes in order.
  const positional = kind !== undefined && (kind.isFile() || kind.isBlockDevice());
  if (options.sparse === true && kind !== undefined && !kind.isFile()) {
    await input.close();
    if (owned) await output!.close();
    throw new DmsnapError('a sparse image needs a regular file: holes cannot be left on a device or in a stream', 'ERR_INVALID_ARG_VALUE');
  }
  const sparse = options.sparse === true && kind !== undefined;
  const buffers = [Buffer.allocUnsafe(BLOCK_BYTES), Buffer.allocUnsafe(BLOCK_BYTES)];
  let pendingWrite: Promise<void> = Promise.resolve();
  let position = 0;
  try {
    for (let turn = 0; position < sizeBytes; turn++) {
      options.signal?.throwIfAborted();
      const buffer = buffers[turn % 2];
      const want = Math.min(BLOCK_BYTES, sizeBytes - position);
      // Read the next block while the previous one is still being written.
      const [{ bytesRead }] = await Promise.all([input.read(buffer, 0, want, position), pendingWrite]);
      if (bytesRead === 0) throw new DmsnapError(`${source} ended at byte ${position}, before its size ${sizeBytes}`, 'EIO');
      const at = position;
      if (output) {
        pendingWrite = writeBlock(output, buffer, bytesRead, positional ? at : null, sparse);
      } else {
        // A stream may hold on to what it is given: hand it a copy, and wait for it to
        // drain before reading far ahead.
        pendingWrite = writeStream(target as Writable, Buffer.from(buffer.subarray(0, bytesRead)));
      }
      position += bytesRead;
      options.onProgress?.({ bytesDone: position, bytesTotal: sizeBytes });
    }
    await pendingWrite;
    if (output) {
      // Trailing holes: give the file its full length.
      if (sparse) await output.truncate(sizeBytes);
      // Make a file durable; a device such as /dev/null cannot be synced.
      if (kind!.isFile()) await output.sync();
    }
    return position;
  } finally {
    await pendingWrite.catch(() => undefined);
    await input.close();
    if (owned) await output?.close();
  }
}
