/**
 * Incremental images on the command line: `dmsnap image NAME --update IMG` and
 * `--delta FILE|-` (from image.ts), `dmsnap apply DELTA IMG` and `dmsnap changes NAME`.
 */
import { open } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { DmsnapError } from '../errors';
import { openOrigin, type Origin } from '../snapshot';
import { applyDelta } from '../snapshot/apply';
import { writeAll, writeStream } from '../snapshot/image';
import { openImageOutput } from '../snapshot/image-output';
import { updateImage, writeDelta } from '../snapshot/incremental';
import type { Snapshot } from '../snapshot/snapshot';
import { blockDeviceInfo } from '../system/block-device';
import { sectorsToBytes } from '../units';
import { checkName, type CliContext, type Command, ExitCode, jsonOption, oneName, openDm, type ParsedArgs, UsageError, writeLine } from './command';
import { writeJson } from './format';
import { guardOf } from './image';
import { hooksFromArgs, info, lifecycle, requireCow, snapshotArgs } from './lifecycle-common';
import { ProgressBar } from './progress';
import { formatBytes } from './sizes';

/** Drops the origin's tracking snapshots other than `keep`: an origin has one tracking chain. */
export async function dropOtherTracking(origin: Origin, keep: Snapshot): Promise<void> {
  for (const snap of await origin.snapshots()) {
    if (snap.info.trackingSince !== null && snap.info.snapId !== keep.info.snapId) await snap.drop();
  }
}

/** The change set is lost (tracking snapshot gone or invalid): exit 3, as for an invalid snapshot. */
function lostChain(io: CliContext, error: unknown): number | undefined {
  const code = (error as DmsnapError).code;
  if (code !== 'ERR_DMSNAP_SNAPSHOT_INVALID' && code !== 'ERR_DMSNAP_NOT_TRACKED') return undefined;
  writeLine(io.stderr, `dmsnap image: ${(error as Error).message}`);
  return ExitCode.snapshotInvalid;
}

function checkIncrementArgs(args: ParsedArgs): void {
  const update = args.values.update as string | undefined;
  const delta = args.values.delta as string | undefined;
  if (update !== undefined && delta !== undefined) throw new UsageError('give --update IMG or --delta FILE|-, not both');
  for (const option of ['output', 'track', 'sparse'] as const) {
    if (args.values[option] !== undefined) throw new UsageError(`--${option} is for a full image; --update and --delta track by themselves`);
  }
  if (update === '' || update === '-') throw new UsageError('--update needs an image file written by "dmsnap image --track"');
  if (delta === '') throw new UsageError('--delta needs a file, or - for stdout');
  requireCow(args);
}

/** `dmsnap image NAME --update IMG` or `--delta FILE|-`. */
export async function runIncrement(args: ParsedArgs, io: CliContext, name: string): Promise<number> {
  checkName(name);
  checkIncrementArgs(args);
  const snapshot = { ...snapshotArgs(args), hooks: hooksFromArgs(io, args) };
  using dm = await openDm(io);
  const origin = await openOrigin(name, lifecycle(io, dm));
  try {
    const update = args.values.update as string | undefined;
    if (update !== undefined) {
      const image = resolve(update);
      const progress = new ProgressBar(io.stderr, origin.name);
      const result = await updateImage(origin, image, snapshot, { onProgress: ({ bytesDone, bytesTotal }) => progress.update(bytesDone, bytesTotal) });
      progress.finish(result.bytesCopied, result.bytesCopied);
      info(io, `dmsnap: updated ${image}: ${result.extents} extent(s), ${formatBytes(result.bytesCopied)} copied of ${formatBytes(origin.sizeBytes)}; ${result.tracking.name} tracks ${name} now`);
      return ExitCode.ok;
    }
    const target = args.values.delta as string;
    const fd = (io.stdout as { fd?: unknown }).fd;
    const out = await openImageOutput({
      target: target === '-' ? { stream: io.stdout, fd: typeof fd === 'number' ? fd : undefined } : target,
      guard: await guardOf(dm, origin, requireCow(args)),
      sizeBytes: 0,
      sparse: false,
      deviceSize: async (path) => (await blockDeviceInfo(path, { binding: io.binding })).sizeBytes,
    });
    let committed = false;
    try {
      const sink = (bytes: Buffer) => (out.handle ? writeAll(out.handle, bytes, bytes.length, null) : writeStream(out.stream as NodeJS.WritableStream as Writable, bytes));
      const result = await writeDelta(origin, sink, snapshot, async () => {
        await out.commit();
        committed = true;
      });
      info(io, `dmsnap: wrote a delta of ${result.extents} extent(s), ${formatBytes(result.bytesCopied)} of data, to ${out.path}; ${result.tracking.name} tracks ${name} now`);
      return ExitCode.ok;
    } finally {
      if (!committed) await out.discard();
    }
  } catch (error) {
    const exit = lostChain(io, error);
    if (exit !== undefined) return exit;
    throw error;
  }
}

export const applyCommand: Command = {
  name: ['apply'],
  summary: 'apply a delta (dmsnap image --delta) to an image file',
  usage: 'DELTA|- IMG',
  help: `Brings IMG, an image file whose identity (IMG.dmsnap) says it holds the origin at the
delta's starting snapshot, to the delta's end snapshot. Needs no device-mapper: run it
wherever the image is. IMG is marked incomplete in IMG.dmsnap before its first byte is
written, and complete only once the whole delta, checksum included, is in and synced;
applying the same delta again completes an interrupted apply. Refused: a delta of another
origin or size, or one that does not start where IMG is (apply deltas in order).

Example:
  dmsnap image md2 --cow /dev/sdb7 --delta - | ssh backup dmsnap apply - /srv/md2.img`,
  options: {},
  allowPositionals: true,
  async run(args, io) {
    if (args.positionals.length !== 2) throw new UsageError('expected DELTA (or - for stdin) and IMG');
    const [delta, image] = args.positionals;
    // Opened first: a missing or unreadable delta fails here, before IMG is looked at.
    const file = delta === '-' ? undefined : await open(delta, 'r');
    try {
      const stream = file ? file.createReadStream({ autoClose: false }) : (io.stdin as Readable);
      const result = await applyDelta(resolve(image), stream);
      info(io, `dmsnap: applied ${result.extents} extent(s), ${formatBytes(result.bytes)}, to ${image}: it holds ${result.header.originName} as of ${result.header.to.takenAt}`);
      return ExitCode.ok;
    } finally {
      await file?.close();
    }
  },
};

export const changesCommand: Command = {
  name: ['changes'],
  summary: "list the extents changed since NAME's tracking snapshot",
  usage: 'NAME [--json]',
  help: `The byte ranges of the origin written since its tracking snapshot (dmsnap image
--track) was taken, read from that snapshot's exception table: one "OFFSET LENGTH" line
(in bytes) per extent, in origin order; whole chunks. --json prints
  {"origin", "snapshot", "trackingSince", "chunkBytes", "changedBytes",
   "extents": [{"offsetBytes", "lengthBytes"}]}
Exits 3 when NAME has no valid tracking snapshot (the change set is lost).

Example:
  dmsnap changes md2 --json`,
  options: jsonOption,
  allowPositionals: true,
  async run(args, io) {
    const name = oneName(args);
    using dm = await openDm(io);
    const origin = await openOrigin(name, lifecycle(io, dm));
    const snap = await origin.trackingSnapshot();
    if (!snap) {
      writeLine(io.stderr, `dmsnap changes: ${name} has no tracking snapshot; take one with "dmsnap image ${name} --track ..."`);
      return ExitCode.snapshotInvalid;
    }
    const extents = [];
    try {
      for await (const extent of snap.changes()) extents.push(extent);
    } catch (error) {
      if ((error as DmsnapError).code !== 'ERR_DMSNAP_SNAPSHOT_INVALID') throw error;
      writeLine(io.stderr, `dmsnap changes: ${(error as Error).message}`);
      return ExitCode.snapshotInvalid;
    }
    const changedBytes = extents.reduce((sum, e) => sum + e.lengthBytes, 0);
    if (args.values.json) {
      writeJson(io, { origin: name, snapshot: snap.name, trackingSince: snap.info.trackingSince!.toISOString(), chunkBytes: sectorsToBytes(snap.info.chunkSectors), changedBytes, extents });
      return ExitCode.ok;
    }
    for (const e of extents) writeLine(io.stdout, `${e.offsetBytes} ${e.lengthBytes}`);
    info(io, `dmsnap: ${extents.length} extent(s), ${formatBytes(changedBytes)} changed on ${name} since ${snap.info.trackingSince!.toISOString()}`);
    return ExitCode.ok;
  },
};
