/**
 * A COW file instead of a COW device: dmsnap creates the file (sparse, by default large
 * enough for every chunk of the origin), attaches it to a loop device of its own with
 * autoclear, and hands that loop device to the snapshot as its COW. The file is recorded
 * (system/cow-records.ts) before it exists, so that drop deletes it and recover deletes
 * one a crash left; the loop device carries the tag DMSNAP-<originId>-cow-<snapId>.
 *
 * Refused before anything is created: a directory another user controls, a filesystem
 * that lies on the origin's own device stack (copy-on-write would write through the
 * filesystem being frozen), one that cannot hold sparse files, an existing file that is
 * not a COW file dmsnap kept.
 */
import { dirname, resolve } from 'node:path';
import { DmsnapError, SyscallError } from '../errors';
import { ensureTrustedDirectory } from '../safety/paths';
import {
  createSparseFile,
  entryAt,
  fileIdentity,
  hostFilesystem,
  noSparseFiles,
  publishFile,
  removeOwnFile,
  resizeOwnFile,
  temporaryName,
} from '../system/cow-file';
import { CowRecords, type CowFileRecord } from '../system/cow-records';
import type { AttachedLoop } from '../system/loop';
import { filesystemDevices } from '../system/fs-devices';
import { deviceStack, devKey, loopBackingFilesystems } from '../system/stack';
import type { System } from '../system/system';
import { labelledCowSectors } from './cow-mapping';
import { SECTOR_BYTES, sectorsToBytes, type Sectors } from '../units';
import { check, checkInteger, checkPath } from '../validate';
import type { PlannedOrigin } from './plan';
import type { LockOptions } from '../system/lock';

/** Options of a COW file (SnapshotOptions.cowFile). */
export interface CowFileOptions {
  /** The file to create: it must not exist, unless it is a COW file dmsnap kept (drop with keepCowFile). */
  path: string;
  /**
   * Its size in bytes (rounded up to whole chunks). Default: the origin's size plus the
   * exception store's metadata, so that copy-on-write never runs out because of the origin.
   */
  sizeBytes?: number;
  /** Reserve the file's whole size on its filesystem (fallocate) instead of a sparse file. Default false. */
  preallocate?: boolean;
}

/** A COW file handed to a snapshot: its loop device, held open until release(). */
export interface CowFileLease {
  /** '/dev/loopN': the snapshot's COW. */
  readonly device: string;
  readonly record: CowFileRecord;
  /** Lets go of the loop device: once no table holds it either, the kernel detaches it. */
  release(): void;
}

/** The lock options and ids a COW file is made for. */
export interface CowFileRequest {
  snapId: string;
  snapshotName: string;
  chunkSectors: Sectors;
  lockOptions: LockOptions;
}

/** The tag of the loop device that serves the COW file of snapshot `snapId` (in lo_file_name). */
export function cowLoopTag(originId: string, snapId: string): string {
  return `DMSNAP-${originId}-cow-${snapId}`;
}

/** Checks SnapshotOptions.cowFile. */
export function checkCowFileOptions(value: unknown): CowFileOptions {
  check(typeof value === 'object' && value !== null, 'cowFile', 'an object { path, sizeBytes? }', value);
  const { path, sizeBytes, preallocate } = value as CowFileOptions;
  checkPath(path, 'cowFile.path');
  if (sizeBytes !== undefined) checkInteger(sizeBytes, 'cowFile.sizeBytes', 1);
  check(preallocate === undefined || typeof preallocate === 'boolean', 'cowFile.preallocate', 'a boolean', preallocate);
  return { path: resolve(path), ...(sizeBytes === undefined ? {} : { sizeBytes }), ...(preallocate ? { preallocate } : {}) };
}

function refuse(message: string, code: 'ERR_DMSNAP_COW_FILE_EXISTS' | 'ERR_DMSNAP_COW_FILE_UNSUITABLE' | 'ERR_DMSNAP_COW_IN_ORIGIN', cause?: unknown): never {
  throw new DmsnapError(message, code, cause === undefined ? undefined : { cause });
}

/**
 * Where the file may go: a directory only root controls, on a filesystem outside the
 * origin that can hold sparse files (and, to preallocate, `reserveBytes` more).
 */
async function checkPlace(origin: PlannedOrigin, path: string, reserveBytes: number): Promise<void> {
  const dir = ensureTrustedDirectory(dirname(path), {
    what: 'directory for the COW file',
    advice: 'name a file in a directory that root owns and only root can write to (or a sticky one such as /var/tmp)',
    code: 'ERR_DMSNAP_UNSAFE_COW_FILE',
    private: false,
    create: false,
    holdsFiles: true,
  });
  const host = hostFilesystem(dir);
  const [wrapper, real] = await Promise.all([origin.dm.info(origin.name), origin.dm.info(origin.realName)]);
  const stack = deviceStack([wrapper, real, origin.backing]);
  for (const own of [wrapper, real, origin.backing]) stack.add(devKey(own));
  // The filesystem's own devices (every member of a btrfs), and the filesystems holding
  // the files of any loop device among them.
  const hostDevices = filesystemDevices(host.dev, dir);
  const reached = [...hostDevices.map(devKey), ...hostDevices.flatMap(loopBackingFilesystems)];
  const onOrigin = reached.find((key) => stack.has(key));
  if (onOrigin) {
    refuse(
      `the COW file ${path} would be on the filesystem of ${origin.name} (device ${onOrigin}): copy-on-write would write through the filesystem being snapshotted; put it on another filesystem`,
      'ERR_DMSNAP_COW_IN_ORIGIN',
    );
  }
  const kind = noSparseFiles(host.type);
  if (kind) refuse(`the COW file ${path} would be on ${kind}, which cannot hold sparse files; put it on ext4, XFS, btrfs or tmpfs`, 'ERR_DMSNAP_COW_FILE_UNSUITABLE');
  if (reserveBytes > host.availableBytes) {
    refuse(
      `cannot preallocate the COW file ${path}: it needs ${reserveBytes} bytes and its filesystem has ${host.availableBytes} free; name a smaller --cow-size, another filesystem, or leave out --preallocate`,
      'ERR_DMSNAP_COW_FILE_UNSUITABLE',
    );
  }
}

/** The file's size: as asked or the default, in whole chunks. */
function fileSize(origin: PlannedOrigin & { sizeSectors: Sectors }, options: CowFileOptions, chunkSectors: Sectors): number {
  const chunkBytes = chunkSectors * SECTOR_BYTES;
  const wanted = options.sizeBytes ?? sectorsToBytes(labelledCowSectors(origin.sizeSectors, chunkSectors));
  return Math.ceil(wanted / chunkBytes) * chunkBytes;
}

/** Creates (or takes back a kept) COW file, recorded at every step; the record in state 'created'. */
function makeFile(records: CowRecords, origin: PlannedOrigin, request: CowFileRequest, path: string, sizeBytes: number): CowFileRecord {
  const record: CowFileRecord = {
    version: 1,
    originId: origin.originId,
    snapId: request.snapId,
    originName: origin.name,
    snapshotName: request.snapshotName,
    path,
    temporaryPath: temporaryName(path, request.snapId),
    sizeBytes,
    state: 'creating',
    createdAt: new Date().toISOString(),
  };
  const existing = entryAt(path);
  if (existing) {
    const kept = records.keptAt(path);
    if (!kept || kept.identity !== existing.identity || !existing.regular) {
      refuse(`${path} exists; name a new file (dmsnap creates the COW file), or remove it first`, 'ERR_DMSNAP_COW_FILE_EXISTS');
    }
    const taken = { ...record, identity: existing.identity, state: 'created' as const };
    records.put(taken);
    records.remove(kept);
    let resized = false;
    try {
      resized = resizeOwnFile(path, existing.identity, sizeBytes);
    } finally {
      // Not taken back: it stays the kept file it was.
      if (!resized) {
        records.put(kept);
        records.remove(taken);
      }
    }
    if (!resized) refuse(`${path} changed while dmsnap was taking it back; name a new file`, 'ERR_DMSNAP_COW_FILE_EXISTS');
    return taken;
  }
  records.put(record);
  try {
    record.identity = createSparseFile(record.temporaryPath, sizeBytes);
    records.put(record);
    publishFile(record.temporaryPath, path);
  } catch (error) {
    discardCowFile(records, record);
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') refuse(`${path} exists; name a new file (dmsnap creates the COW file), or remove it first`, 'ERR_DMSNAP_COW_FILE_EXISTS', error);
    if (code === 'EROFS') refuse(`cannot create the COW file ${path}: its filesystem is read-only`, 'ERR_DMSNAP_COW_FILE_UNSUITABLE', error);
    if (code === 'ENOSPC' || code === 'EFBIG' || code === 'EDQUOT') {
      refuse(`cannot create the COW file ${path} of ${sizeBytes} bytes: ${(error as Error).message}; name a smaller size or another filesystem`, 'ERR_DMSNAP_COW_FILE_UNSUITABLE', error);
    }
    throw error;
  }
  record.state = 'created';
  records.put(record);
  return record;
}

/**
 * Creates the COW file for a snapshot of `origin` and attaches it to a loop device; the
 * lease's device is the snapshot's COW. On failure nothing is left: no file, no loop, no record.
 */
export async function provideCowFile(
  system: System,
  origin: PlannedOrigin & { sizeSectors: Sectors },
  request: CowFileRequest,
  options: CowFileOptions,
  after: (step: 'create-cow-file' | 'attach-cow-file') => Promise<void>,
): Promise<CowFileLease> {
  const { path } = options;
  const sizeBytes = fileSize(origin, options, request.chunkSectors);
  await checkPlace(origin, path, options.preallocate ? sizeBytes : 0);
  const records = CowRecords.of(request.lockOptions);
  const record = makeFile(records, origin, request, path, sizeBytes);
  let loop: AttachedLoop | undefined;
  try {
    if (options.preallocate) await preallocate(system, record);
    await after('create-cow-file');
    loop = await system.loop.attach(path, { tag: cowLoopTag(origin.originId, request.snapId) });
    const status = await system.loop.status(loop.device);
    // The loop must serve the file dmsnap created, not one put at its name meanwhile.
    if (fileIdentity(status.backing) !== record.identity) refuse(`${path} was replaced while dmsnap was attaching it; name a new file`, 'ERR_DMSNAP_COW_FILE_EXISTS');
    record.loop = loop.number;
    record.state = 'attached';
    records.put(record);
    await after('attach-cow-file');
  } catch (error) {
    loop?.release();
    if (loop) await system.loop.detach(loop.device).catch(() => undefined);
    discardCowFile(records, record);
    if (error instanceof SyscallError) throw new DmsnapError(`cannot attach the COW file ${path} to a loop device: ${error.message}`, error.code, { cause: error });
    throw error;
  }
  const attached = loop;
  return { device: attached.device, record, release: () => attached.release() };
}

/** Reserves the whole COW file; a filesystem that cannot is named. */
async function preallocate(system: System, record: CowFileRecord): Promise<void> {
  try {
    await system.preallocateFile(record.path, record.identity!, record.sizeBytes);
  } catch (error) {
    if (error instanceof SyscallError && (error.code === 'ENOSPC' || error.code === 'EOPNOTSUPP' || error.code === 'EDQUOT')) {
      refuse(`cannot preallocate the COW file ${record.path} of ${record.sizeBytes} bytes: ${error.message}; leave out --preallocate or name another filesystem`, 'ERR_DMSNAP_COW_FILE_UNSUITABLE', error);
    }
    throw error;
  }
}

/** Deletes what `record` created (each file only while it is still that inode), and the record; with `keep`, keeps the file and marks the record kept. */
export function discardCowFile(records: CowRecords, record: CowFileRecord, keep = false): void {
  if (record.identity) removeOwnFile(record.temporaryPath, record.identity);
  if (keep && record.identity && entryAt(record.path)?.identity === record.identity) {
    const { loop: _loop, ...rest } = record;
    records.put({ ...rest, state: 'kept' });
    return;
  }
  if (record.identity) removeOwnFile(record.path, record.identity);
  records.remove(record);
}

/** Detaches the loop device of `record` if it still serves that file (it is detached at its last close if something holds it). */
export async function detachCowLoop(system: System, record: CowFileRecord): Promise<void> {
  if (record.loop === undefined) return;
  const device = `/dev/loop${record.loop}`;
  const status = await system.loop.status(device).catch(() => undefined);
  if (!status || status.tag !== cowLoopTag(record.originId, record.snapId) || fileIdentity(status.backing) !== record.identity) return;
  await system.loop.detach(device).catch(() => undefined);
}

/** The COW file recorded for snapshot `snapId`, or null (none, or the records cannot be read). */
export function recordedCowFile(options: LockOptions, originId: string, snapId: string): string | null {
  try {
    return CowRecords.of(options).get(originId, snapId)?.path ?? null;
  } catch {
    return null;
  }
}
