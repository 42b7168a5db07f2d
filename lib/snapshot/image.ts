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

/** Writes `length` bytes at `position`, or at the current offset when position is null. */
async function writeAll(handle: FileHandle, buffer: Buffer, length: number, position: number | null): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesWritten } = await handle.write(buffer, done, length - done, position === null ? null : position + done);
    done += bytesWritten;
  }
}

function writeStream(stream: Writable, chunk: Buffer): Promise<void> {
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

/**
 * Copies the block device `source` (`sizeBytes` long) to `target`: a file path (created
 * or truncated) or a writable stream such as stdout. Returns the bytes copied.
 */
export async function copyDevice(source: string, sizeBytes: number, target: string | Writable, options: ImageOptions = {}): Promise<number> {
  const input = await open(source, 'r');
  const output = typeof target === 'string' ? await open(target, 'w') : undefined;
  let sparse = false;
  let positioned = false;
  const buffers = [Buffer.allocUnsafe(BLOCK_BYTES), Buffer.allocUnsafe(BLOCK_BYTES)];
  let pendingWrite: Promise<void> = Promise.resolve();
  let position = 0;
  try {
    // A FIFO or character device takes no positioned writes (Linux 5.10 answers ESPIPE):
    // those get their blocks in order, without holes, as the copy makes them anyway.
    const outputStats = await output?.stat();
    positioned = outputStats !== undefined && (outputStats.isFile() || outputStats.isBlockDevice());
    sparse = options.sparse === true && outputStats?.isFile() === true;
    for (let turn = 0; position < sizeBytes; turn++) {
      options.signal?.throwIfAborted();
      const buffer = buffers[turn % 2];
      const want = Math.min(BLOCK_BYTES, sizeBytes - position);
      // Read the next block while the previous one is still being written.
      const [{ bytesRead }] = await Promise.all([input.read(buffer, 0, want, position), pendingWrite]);
      if (bytesRead === 0) throw new DmsnapError(`${source} ended at byte ${position}, before its size ${sizeBytes}`, 'EIO');
      const at = position;
      if (output) {
        pendingWrite = (async () => {
          if (!sparse) return writeAll(output, buffer, bytesRead, positioned ? at : null);
          for (let offset = 0; offset < bytesRead; offset += HOLE_BYTES) {
            const end = Math.min(offset + HOLE_BYTES, bytesRead);
            if (end - offset === HOLE_BYTES && allZero(buffer, offset, end)) continue;
            await writeAll(output, buffer.subarray(offset), end - offset, at + offset);
          }
        })();
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
      if ((await output.stat()).isFile()) await output.sync();
    }
    return position;
  } finally {
    await pendingWrite.catch(() => undefined);
    await input.close();
    await output?.close();
  }
}
