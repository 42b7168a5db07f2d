/**
 * The identity of an image file that incremental updates keep current: a sidecar file
 * IMG.dmsnap beside IMG, JSON, replaced atomically (a new file, fsync, rename, fsync of the
 * folder). It names the origin, the tracking snapshot whose content IMG holds, the chunk
 * size and when; while an update runs its state is 'updating', so a half-updated image is
 * never taken for a good one, and the same update run again completes it.
 *
 *   {"format": "dmsnap-image", "version": 1, "originId", "originName", "sizeBytes",
 *    "chunkBytes", "snapId", "takenAt", "state": "complete" | "updating",
 *    "update": {"toSnapId", "startedAt"}}        (update only while updating)
 */
import { closeSync, constants, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { DmsnapError } from '../errors';

export const IDENTITY_SUFFIX = '.dmsnap';

/** What IMG.dmsnap says of IMG. */
export interface ImageIdentity {
  format: 'dmsnap-image';
  version: 1;
  /** The origin's id (its devices' uuid tags). */
  originId: string;
  originName: string;
  /** The origin's size: IMG's. */
  sizeBytes: number;
  chunkBytes: number;
  /** The tracking snapshot whose content IMG holds (when complete), or the one it is updated from. */
  snapId: string;
  /** When that snapshot was taken (ISO 8601). */
  takenAt: string;
  state: 'complete' | 'updating';
  /** While updating: the snapshot whose content IMG is being brought to. */
  update?: { toSnapId: string; startedAt: string };
}

export function identityPath(image: string): string {
  return `${image}${IDENTITY_SUFFIX}`;
}

/** IMG's identity, or undefined when it has none; a sidecar that is not one of dmsnap's is refused. */
export function readImageIdentity(image: string): ImageIdentity | undefined {
  let text: string;
  try {
    const fd = openSync(identityPath(image), constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      text = readFileSync(fd, 'utf8');
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new DmsnapError(`cannot read the identity ${identityPath(image)} of image ${image}: ${(error as Error).message}`, 'ERR_DMSNAP_IMAGE_MISMATCH', { cause: error });
  }
  let parsed: Partial<ImageIdentity>;
  try {
    parsed = JSON.parse(text) as Partial<ImageIdentity>;
  } catch (error) {
    throw new DmsnapError(`${identityPath(image)} is not an image identity dmsnap wrote (not JSON)`, 'ERR_DMSNAP_IMAGE_MISMATCH', { cause: error });
  }
  const ok =
    parsed.format === 'dmsnap-image' &&
    parsed.version === 1 &&
    typeof parsed.originId === 'string' &&
    typeof parsed.snapId === 'string' &&
    Number.isSafeInteger(parsed.sizeBytes) &&
    Number.isSafeInteger(parsed.chunkBytes) &&
    (parsed.state === 'complete' || (parsed.state === 'updating' && typeof parsed.update?.toSnapId === 'string'));
  if (!ok) throw new DmsnapError(`${identityPath(image)} is not an image identity dmsnap wrote`, 'ERR_DMSNAP_IMAGE_MISMATCH');
  return parsed as ImageIdentity;
}

/** Replaces IMG's identity durably: written and synced under a new name, renamed, folder synced. */
export function writeImageIdentity(image: string, identity: ImageIdentity): void {
  const target = identityPath(image);
  const temporary = join(dirname(target), `.${basename(target)}.${process.pid}.tmp`);
  const fd = openSync(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    writeSync(fd, `${JSON.stringify(identity, null, 2)}\n`);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    unlinkSync(temporary);
    throw error;
  }
  closeSync(fd);
  renameSync(temporary, target);
  syncFolder(dirname(target));
}

/** Removes IMG's identity (before IMG is replaced by a new full image). */
export function removeImageIdentity(image: string): void {
  try {
    unlinkSync(identityPath(image));
    syncFolder(dirname(image));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

function syncFolder(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
