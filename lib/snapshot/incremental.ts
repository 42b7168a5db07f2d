/**
 * Incremental images from changed-block tracking. An origin's tracking snapshot S1 (taken
 * at T1) lists in its exception table every chunk written since T1. The next increment
 * takes a new tracking snapshot S2 (one freeze), then reads S1's table: the origin was
 * suspended at T2 and a write waits for its exception, so the table holds every chunk
 * changed between T1 and T2 (and perhaps some written later: those are read from S2 too,
 * which is harmless). Those chunks, read from S2, bring an image of T1 to T2; then S1 is
 * dropped and S2 tracks.
 *
 * An image file's identity (image-identity.ts) is marked 'updating' before its first byte
 * is written and 'complete' once the image is durable, so an interrupted update is never
 * taken for a good image, and the same update run again completes it.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { DmsnapError, type ErrnoCode } from '../errors';
import { readSnapshotExceptions, extentsOf, type ChangedExtent } from './changes';
import { encodeDeltaEnd, encodeDeltaStart, encodeExtentHead, type DeltaHeader } from './delta';
import { identityPath, readImageIdentity, writeImageIdentity, type ImageIdentity } from './image-identity';
import { writeAll } from './image';
import type { Origin, SnapshotOptions } from './origin';
import type { Snapshot } from './snapshot';
import { sectorsToBytes } from '../units';
import { stepRunner, type StepHook, type UpdateStep } from './steps';

const PIECE_BYTES = 4 * 1024 * 1024;

/** The snapshot options of an increment's new tracking snapshot (its name and tag are dmsnap's). */
export type IncrementSnapshotOptions = Omit<SnapshotOptions, 'tracking' | 'name'>;


/** Options of updateImage. */
export interface UpdateOptions {
  /** @internal Test hook called after each step. */
  onStep?: StepHook;
  /** Called after each extent copied. */
  onProgress?: (progress: { bytesDone: number; bytesTotal: number }) => void;
}

/** What an update did. */
export interface UpdateResult {
  /** The new tracking snapshot: the image now holds its content. */
  tracking: Snapshot;
  extents: number;
  /** Bytes read from the new snapshot and written to the image. */
  bytesCopied: number;
  /** The exceptions in the previous tracking snapshot's table. */
  exceptions: number;
}

/** The name of a new tracking snapshot of `origin`. */
export function trackingName(origin: Origin): string {
  return `${origin.name}-track-${Date.now()}`;
}

/** Takes a new tracking snapshot; with no chunk size given, that of the chain (`from`). */
export async function takeTracking(origin: Origin, options: IncrementSnapshotOptions, from?: Snapshot): Promise<Snapshot> {
  const chunkSectors = options.chunkSectors ?? from?.info.chunkSectors;
  return origin.snapshot({ ...options, ...(chunkSectors === undefined ? {} : { chunkSectors }), tracking: true, name: trackingName(origin) }).catch(async (error: unknown) => {
    // Only the post-thaw hooks failed: the update stops, and the snapshot it took goes.
    for (const snap of (error as { snapshots?: Snapshot[] }).snapshots ?? []) await snap.drop().catch(() => undefined);
    throw error;
  });
}

export function identityOf(origin: Origin, snap: Snapshot, state: ImageIdentity['state'] = 'complete'): ImageIdentity {
  return {
    format: 'dmsnap-image',
    version: 1,
    originId: origin.originId,
    originName: origin.name,
    sizeBytes: origin.sizeBytes,
    chunkBytes: sectorsToBytes(snap.info.chunkSectors),
    snapId: snap.info.snapId,
    takenAt: (snap.info.trackingSince ?? new Date()).toISOString(),
    state,
  };
}

function mismatch(message: string): DmsnapError {
  return new DmsnapError(message, 'ERR_DMSNAP_IMAGE_MISMATCH');
}

/** The image's identity, checked against the origin. */
function checkedIdentity(origin: Origin, image: string): ImageIdentity {
  const identity = readImageIdentity(image);
  if (!identity) throw mismatch(`${image} has no dmsnap identity (${image}.dmsnap): it was not written by "dmsnap image --track"; take a full image with --track first`);
  if (identity.originId !== origin.originId) {
    throw mismatch(`${image} is an image of another origin (${identity.originName}, id ${identity.originId}), not of ${origin.name} (id ${origin.originId}); name the image of ${origin.name}`);
  }
  if (identity.sizeBytes !== origin.sizeBytes) throw mismatch(`${image} is of an origin of ${identity.sizeBytes} bytes; ${origin.name} is now ${origin.sizeBytes}: take a full image`);
  return identity;
}

/**
 * The tracking snapshot an increment starts from: `snapId`, which must be there and
 * valid. Every other tracking snapshot of the origin except `keep` is a leftover of an
 * interrupted run, and is dropped.
 */
export async function trackingBase(origin: Origin, snapId: string | undefined, keep?: string): Promise<{ from: Snapshot; resumed?: Snapshot }> {
  const tracking = (await origin.snapshots())
    .filter((s) => s.info.trackingSince !== null)
    .sort((a, b) => a.info.trackingSince!.getTime() - b.info.trackingSince!.getTime() || (a.name < b.name ? -1 : 1));
  // Without an image to say which, the oldest: its table holds the changes of every newer one.
  const from = snapId === undefined ? tracking[0] : tracking.find((s) => s.info.snapId === snapId);
  if (!from) {
    throw new DmsnapError(
      `${origin.name} has no tracking snapshot${snapId ? ` ${snapId}` : ''}: the changes since the last image are unknown (a reboot or a drop loses them); take a full image with --track`,
      'ERR_DMSNAP_NOT_TRACKED',
    );
  }
  let resumed: Snapshot | undefined;
  for (const snap of tracking) {
    if (snap === from) continue;
    if (keep !== undefined && snap.info.snapId === keep && (await snap.status()).state === 'active') resumed = snap;
    else await snap.drop();
  }
  const state = (await from.status()).state;
  if (state !== 'active') {
    throw new DmsnapError(
      `the tracking snapshot ${from.name} of ${origin.name} is ${state} (its COW filled or failed): the changes since it was taken are lost; drop it and take a full image with --track`,
      'ERR_DMSNAP_SNAPSHOT_INVALID',
    );
  }
  return { from, resumed };
}

/** The extents changed since `from`, read after the newer snapshot was taken; `from` must still be valid after. */
export async function changesSince(origin: Origin, from: Snapshot): Promise<{ extents: ChangedExtent[]; exceptions: number }> {
  const exceptions = await readSnapshotExceptions(from);
  // Invalidated before the newer snapshot's freeze? Its table may then lack changes.
  const state = (await from.status()).state;
  if (state !== 'active') {
    throw new DmsnapError(`the tracking snapshot ${from.name} of ${origin.name} became ${state}: the changes since it was taken are lost; take a full image with --track`, 'ERR_DMSNAP_SNAPSHOT_INVALID');
  }
  return { extents: extentsOf(exceptions, sectorsToBytes(from.info.chunkSectors), origin.sizeBytes), exceptions: exceptions.length };
}

/** Opens the image for an update: an existing regular file of the origin's size, never through a symlink. */
async function openImage(image: string, sizeBytes: number): Promise<FileHandle> {
  const handle = await open(image, constants.O_WRONLY | constants.O_NOFOLLOW);
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw mismatch(`${image} is not a regular file: only an image file can be updated in place`);
    if (stats.size !== sizeBytes) throw mismatch(`${image} is ${stats.size} bytes, not the origin's ${sizeBytes}: it is not a complete image; take a full image`);
    return handle;
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** Reads the changes since `from` and copies them from `to` into the image, durably. */
async function copyChanges(origin: Origin, from: Snapshot, to: Snapshot, output: FileHandle, options: UpdateOptions, step: (s: UpdateStep) => Promise<void>) {
  const { extents, exceptions } = await changesSince(origin, from);
  const bytesCopied = await copyExtents(to, extents, output, options, step);
  await output.sync();
  await step('sync-image');
  return { extents, exceptions, bytesCopied };
}

/**
 * An update that stopped on a failed read or write (a full filesystem, an I/O error):
 * what failed and what to do. dmsnap's own errors (an invalidated snapshot, a lost
 * chain) pass unchanged.
 */
function interrupted(image: string, error: unknown): unknown {
  const code = (error as { code?: unknown })?.code;
  if (typeof code !== 'string' || !/^E[A-Z0-9]+$/.test(code)) return error;
  const advice = code === 'ENOSPC' || code === 'EDQUOT' ? `free space on the filesystem of ${image}` : 'check the devices under the image and the snapshots (dmesg)';
  const reason = (error as Error).message;
  return new DmsnapError(`the update of ${image} stopped: ${reason}. The image stays marked incomplete (${identityPath(image)}) and is not used as a good image; ${advice}, then run the same command again to complete it`, code as ErrnoCode, { cause: error });
}

/** Copies `extents` from the snapshot device to the image at the same offsets. */
async function copyExtents(snap: Snapshot, extents: ChangedExtent[], output: FileHandle, options: UpdateOptions, step: (s: UpdateStep) => Promise<void>): Promise<number> {
  const total = extents.reduce((sum, e) => sum + e.lengthBytes, 0);
  let done = 0;
  let position = 0;
  let first = true;
  return readExtents(
    snap,
    extents,
    async (extent) => {
      if (!first) {
        options.onProgress?.({ bytesDone: done, bytesTotal: total });
        await step('copy-extent');
      }
      first = false;
      position = extent.offsetBytes;
    },
    async (data) => {
      await writeAll(output, data, data.length, position);
      position += data.length;
      done += data.length;
    },
  );
}

/**
 * Brings the image file `image` (written by a full image with tracking) to the origin's
 * content now: a new tracking snapshot, the chunks changed since the image's tracking
 * snapshot copied into it, durably; then the old tracking snapshot is dropped. An update
 * that was interrupted is completed (with the snapshot it had taken, if it is still there).
 */
export async function updateImage(origin: Origin, image: string, snapshot: IncrementSnapshotOptions, options: UpdateOptions = {}): Promise<UpdateResult> {
  const step = stepRunner(options.onStep);
  const release = await origin.lockTracking();
  try {
    const identity = checkedIdentity(origin, image);
    const { from, resumed } = await trackingBase(origin, identity.snapId, identity.update?.toSnapId);
    let to = resumed;
    const output = await openImage(image, origin.sizeBytes);
    try {
      if (!to) {
        to = await takeTracking(origin, snapshot, from);
        await step('take-snapshot');
      }
      writeImageIdentity(image, { ...identity, state: 'updating', update: { toSnapId: to.info.snapId, startedAt: new Date().toISOString() } });
      await step('mark-updating');
      const { extents, exceptions, bytesCopied } = await copyChanges(origin, from, to, output, options, step).catch((error: unknown) => {
        throw interrupted(image, error);
      });
      const state = (await to.status()).state;
      if (state !== 'active') throw new DmsnapError(`the new tracking snapshot ${to.name} became ${state} during the copy; ${image} stays marked incomplete: run the update again`, 'ERR_DMSNAP_SNAPSHOT_INVALID');
      writeImageIdentity(image, identityOf(origin, to));
      await step('mark-complete');
      await from.drop();
      await step('drop-previous');
      return { tracking: to, extents: extents.length, bytesCopied, exceptions };
    } finally {
      await output.close();
    }
  } finally {
    release();
  }
}

/** What writeDelta wrote. */
export interface DeltaResult {
  tracking: Snapshot;
  extents: number;
  /** Bytes of origin data in the delta (its size is this plus 16 per extent and its header). */
  bytesCopied: number;
  exceptions: number;
}

/**
 * Writes the changes since the origin's tracking snapshot as a delta (delta.ts) to `sink`,
 * from a new tracking snapshot; once all of it is written, the old tracking snapshot is
 * dropped and the new one tracks. If writing fails, the new snapshot is dropped and the
 * old one still tracks. The delta starts from the oldest tracking snapshot (newer ones are
 * leftovers of an interrupted run, and are dropped).
 */
export async function writeDelta(
  origin: Origin,
  sink: (bytes: Buffer) => Promise<void>,
  snapshot: IncrementSnapshotOptions,
  /** Makes what was written durable and puts it in place; before the old tracking snapshot is dropped. */
  commit: () => Promise<void> = async () => undefined,
): Promise<DeltaResult> {
  const release = await origin.lockTracking();
  try {
    const { from } = await trackingBase(origin, undefined);
    const to = await takeTracking(origin, snapshot, from);
    try {
      const { extents, exceptions } = await changesSince(origin, from);
      const header: DeltaHeader = {
        format: 'dmsnap-delta',
        version: 1,
        originId: origin.originId,
        originName: origin.name,
        sizeBytes: origin.sizeBytes,
        chunkBytes: sectorsToBytes(to.info.chunkSectors),
        from: { snapId: from.info.snapId, takenAt: from.info.trackingSince!.toISOString() },
        to: { snapId: to.info.snapId, takenAt: to.info.trackingSince!.toISOString() },
      };
      const hash = createHash('sha256');
      const emit = async (bytes: Buffer) => {
        hash.update(bytes);
        await sink(bytes);
      };
      await emit(encodeDeltaStart(header));
      const bytesCopied = await readExtents(to, extents, (extent) => emit(encodeExtentHead(extent.offsetBytes, extent.lengthBytes)), (data) => emit(Buffer.from(data)));
      const state = (await to.status()).state;
      if (state !== 'active') throw new DmsnapError(`the new tracking snapshot ${to.name} became ${state} while the delta was written; the delta is incomplete`, 'ERR_DMSNAP_SNAPSHOT_INVALID');
      await sink(encodeDeltaEnd(extents.length, hash.digest()));
      await commit();
      await from.drop();
      return { tracking: to, extents: extents.length, bytesCopied, exceptions };
    } catch (error) {
      await to.drop().catch(() => undefined);
      throw error;
    }
  } finally {
    release();
  }
}

/** Reads `extents` of the snapshot device, calling `onExtent` before each and `onData` with its pieces. */
async function readExtents(snap: Snapshot, extents: ChangedExtent[], onExtent: (e: ChangedExtent) => Promise<void>, onData: (data: Buffer) => Promise<void>): Promise<number> {
  const input = await open(snap.devicePath, 'r');
  const buffer = Buffer.allocUnsafe(PIECE_BYTES);
  let done = 0;
  try {
    for (const extent of extents) {
      await onExtent(extent);
      for (let at = 0; at < extent.lengthBytes; ) {
        const want = Math.min(PIECE_BYTES, extent.lengthBytes - at);
        const { bytesRead } = await input.read(buffer, 0, want, extent.offsetBytes + at);
        if (bytesRead === 0) throw new DmsnapError(`${snap.devicePath} ended at byte ${extent.offsetBytes + at}`, 'EIO');
        await onData(buffer.subarray(0, bytesRead));
        at += bytesRead;
        done += bytesRead;
      }
    }
  } finally {
    await input.close();
  }
  return done;
}
