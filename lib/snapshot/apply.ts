/**
 * Applies a delta (delta.ts) to an image file that holds the origin at the delta's
 * "from" snapshot, as its identity (image-identity.ts) says. Needs no device-mapper: it
 * runs wherever the image is. The image is marked 'updating' before its first byte is
 * written and 'complete' only once the whole delta, checksum included, is in and synced;
 * applying the same delta again completes an interrupted apply.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { DmsnapError } from '../errors';
import { readDelta, type DeltaHeader } from './delta';
import { writeAll } from './image';
import { readImageIdentity, writeImageIdentity, type ImageIdentity } from './image-identity';

function mismatch(message: string): DmsnapError {
  return new DmsnapError(message, 'ERR_DMSNAP_IMAGE_MISMATCH');
}

/** The image's identity, if the delta fits it: same origin and size, and the image at "from" (or this apply interrupted). */
function checkFits(image: string, identity: ImageIdentity | undefined, header: DeltaHeader): ImageIdentity {
  if (!identity) throw mismatch(`${image} has no dmsnap identity (${image}.dmsnap); copy it along with the image, or start from a full image written with --track`);
  if (identity.originId !== header.originId) throw mismatch(`the delta is of origin ${header.originName} (id ${header.originId}); ${image} is an image of ${identity.originName} (id ${identity.originId})`);
  if (identity.sizeBytes !== header.sizeBytes) throw mismatch(`the delta is of an origin of ${header.sizeBytes} bytes; ${image} holds ${identity.sizeBytes}`);
  const resuming = identity.state === 'updating' && identity.update?.toSnapId === header.to.snapId && identity.snapId === header.from.snapId;
  if (identity.state === 'updating' && !resuming) {
    throw mismatch(`${image} is incomplete: an update to snapshot ${identity.update?.toSnapId} was interrupted; apply that delta again (this one goes to ${header.to.snapId})`);
  }
  if (identity.snapId !== header.from.snapId) {
    throw mismatch(`the delta starts from snapshot ${header.from.snapId} (${header.from.takenAt}); ${image} holds snapshot ${identity.snapId} (${identity.takenAt}): apply the deltas in order`);
  }
  return identity;
}

/** Applies the delta read from `delta` to the image file `image`. */
export async function applyDelta(image: string, delta: Readable): Promise<{ header: DeltaHeader; extents: number; bytes: number }> {
  const identity = readImageIdentity(image);
  const handle = await open(image, constants.O_WRONLY | constants.O_NOFOLLOW);
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw mismatch(`${image} is not a regular file`);
    let fits: ImageIdentity | undefined;
    const result = await readDelta(
      delta,
      async (header) => {
        fits = checkFits(image, identity, header);
        if (stats.size !== header.sizeBytes) throw mismatch(`${image} is ${stats.size} bytes, not the origin's ${header.sizeBytes}`);
        writeImageIdentity(image, { ...fits, state: 'updating', update: { toSnapId: header.to.snapId, startedAt: new Date().toISOString() } });
      },
      (offset, data) => writeAll(handle, data, data.length, offset),
    );
    await handle.sync();
    const { header } = result;
    const { update: _update, ...rest } = fits!;
    writeImageIdentity(image, { ...rest, state: 'complete', snapId: header.to.snapId, takenAt: header.to.takenAt, chunkBytes: header.chunkBytes });
    return result;
  } finally {
    await handle.close();
  }
}
