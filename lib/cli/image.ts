/**
 * `dmsnap image`: snapshot, copy the whole snapshot device to a file, a device or stdout,
 * check that the snapshot stayed valid, drop. The output is checked and opened before the
 * snapshot is taken; a regular file is replaced only by a complete, valid image.
 */
import { stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { blockDeviceInfo } from '../system/block-device';
import type { DeviceMapper } from '../dm/device-mapper';
import { copyDevice } from '../snapshot/image';
import { decodeDev, type ImageOutput, openImageOutput, type OutputGuard } from '../snapshot/image-output';
import { openOrigin, type Origin } from '../snapshot';
import type { Snapshot } from '../snapshot/snapshot';
import { deviceStack, devicesAbove, devKey } from '../system/stack';
import { type CliContext, type Command, ExitCode, one, openDm, type ParsedArgs, UsageError, writeLine } from './command';
import { type CowChoice, cowFileGuardFromArgs, cowFileGuardOptions, info, invalidMessage, lifecycle, lowSpaceMessage, requireCow, snapshotOptions, snapshotFromArgs, startCowFileGuard } from './lifecycle-common';
import { DEFAULT_MIN_FREE_PERCENT, type HostSpace } from '../snapshot/cow-guard';
import { ProgressBar } from './progress';
import { formatBytes } from './sizes';
import { identityOf } from '../snapshot/incremental';
import { removeImageIdentity, writeImageIdentity } from '../snapshot/image-identity';
import { dropOtherTracking, runIncrement } from './incremental';

/** The origin's devices (all of its stack, for device outputs; it and what is built on it, for files) and the COW. */
export async function guardOf(dm: DeviceMapper, origin: Origin, choice: CowChoice): Promise<OutputGuard> {
  const [wrapper, real] = await Promise.all([dm.info(origin.name), dm.info(origin.realName)]);
  const own = new Map([
    [devKey(wrapper), `the origin ${origin.devicePath}`],
    [devKey(real), `${dm.devicePath(origin.realName)}, the origin's own mapping of its backing device`],
    [devKey(origin.backing), `the origin's backing device`],
  ]);
  const devices = new Map<string, string>();
  for (const key of deviceStack([wrapper, real, origin.backing])) devices.set(key, own.get(key) ?? `in the device stack of ${origin.name} (it shares blocks with it)`);
  const filesystems = new Map<string, string>(own);
  for (const key of devicesAbove([wrapper])) if (!filesystems.has(key)) filesystems.set(key, `device ${key}, built on ${origin.devicePath}`);
  const cowStats = 'cow' in choice ? await stat(choice.cow).catch(() => undefined) : undefined;
  if (cowStats?.isBlockDevice()) {
    const key = devKey(decodeDev(cowStats.rdev));
    devices.set(key, 'the COW device given with --cow');
    filesystems.set(key, 'the COW device given with --cow');
  }
  return { devices, filesystems, nodeDir: dirname(dm.devicePath(origin.name)) };
}

/**
 * Copies the whole snapshot device to the output, with a progress bar. A failed copy is
 * returned, not thrown: an invalidated snapshot answers reads with EIO, and the caller
 * says why.
 */
async function copySnapshot(
  io: CliContext,
  snap: Snapshot,
  origin: Origin,
  out: ImageOutput,
  sparse: boolean,
  signal: AbortSignal,
): Promise<{ copied: number; copyError?: unknown }> {
  const total = origin.sizeBytes;
  const progress = new ProgressBar(io.stderr, origin.name);
  try {
    const copied = await copyDevice(snap.devicePath, total, out.handle ?? (out.stream as NodeJS.WritableStream as Writable), {
      sparse,
      signal,
      onProgress: ({ bytesDone }) => progress.update(bytesDone, total),
    });
    progress.finish(copied, total);
    return { copied };
  } catch (error) {
    return { copied: 0, copyError: error };
  }
}

/** The options of a full image, checked before anything is touched. */
function fullImageArgs(args: ParsedArgs) {
  const output = args.values.output as string | undefined;
  if (!output) throw new UsageError('--output FILE|-, --update IMG or --delta FILE|- is required');
  if (output === '-' && args.values.sparse) throw new UsageError('--sparse needs a regular file, not stdout');
  const cow = requireCow(args);
  const guard = cowFileGuardFromArgs(args);
  if ('cowFile' in cow && output !== '-' && resolve(output) === resolve(cow.cowFile.path)) throw new UsageError('--output and --cow-file name the same file');
  return { output, track: args.values.track === true, cow, guard };
}

/** After a full image with --track: its identity beside the file, and `snap` as the origin's only tracking snapshot. */
async function keepTracking(io: CliContext, origin: Origin, snap: Snapshot, file: string | undefined): Promise<void> {
  if (file) writeImageIdentity(file, identityOf(origin, snap));
  await dropOtherTracking(origin, snap);
  const next = file ? `the next "dmsnap image ${origin.name} --update ${file}"` : `"dmsnap image ${origin.name} --delta"`;
  info(io, `dmsnap: ${snap.name} tracks the changes of ${origin.name}; ${next} copies only those`);
}

export const imageCommand: Command = {
  name: ['image'],
  summary: 'snapshot, copy the whole snapshot device to FILE or stdout, then drop',
  usage:
    'NAME --cow DEVICE|--cow-file FILE [--cow-size SIZE] [--min-free PCT] [--autoextend T[:S]] --output FILE|- [--sparse] [--track] [--chunk-size SIZE]\n' +
    'NAME --cow DEVICE|--cow-file FILE --update IMG | --delta FILE|- [--chunk-size SIZE]',
  help: `A block-level image of the origin as it was at the snapshot. Shows progress on
stderr when it is a terminal. Checks at the end that the snapshot stayed valid: if not,
exits 3.

The output is checked before the snapshot is taken. A regular FILE is written to a new
temporary file .FILE.dmsnap-XXXX (mode 0600) in the same folder, which replaces FILE only
when the image is complete and valid; on failure only that temporary file is removed and
an existing FILE is left as it was. A block or character device, an existing FIFO and
stdout (-) are written in place (no rename is possible): a failed image leaves them
partly written, and nothing is removed. A block device must be unused and at least as
large as the origin. Refused: a directory, the origin, NAME-real, its backing device or
anything else in its device stack, the COW, a new file in /dev/mapper, and a file on a
filesystem that lives on the origin (its writes would fill the COW).

Options:
  --cow DEVICE       block device for the copied blocks
  --cow-file FILE    or a new file for them, which dmsnap creates (see dmsnap snapshot)
  --cow-size SIZE    the COW file's size (default: the origin's, plus metadata)
  --preallocate      reserve the COW file's space now (fallocate)
  --min-free PCT     with --cow-file: stop (exit 3) when its filesystem has less free (5)
  --autoextend T[:S] with --cow-file: at T% usage grow it by S% (default 20), as LVM
  --output FILE|-    the image file or device, or - for stdout
  --sparse           leave holes for all-zero blocks (regular files only)
  --chunk-size SIZE  as for dmsnap snapshot; with --update and --delta, default the
                     tracking snapshot's
  --track            keep the snapshot as NAME's tracking snapshot (its COW stays in use),
                     and write the image's identity to FILE.dmsnap; replaces NAME's
                     previous tracking snapshot
  --update IMG       incremental: a new tracking snapshot, then only the chunks changed
                     since IMG's tracking snapshot copied into IMG (written with --track)
  --delta FILE|-     incremental: those chunks as a delta stream (see dmsnap apply)

Incremental images: the tracking snapshot's exception table lists every chunk written on
NAME since it was taken. --update and --delta take a new tracking snapshot (with the COW
given now: a device or file other than the tracking snapshot's), copy the chunks that
table names from the new snapshot, then drop the old tracking snapshot. IMG is marked
incomplete in IMG.dmsnap while it is updated; an interrupted update is completed by the
same command. Exit 3 when the chain is lost: the tracking snapshot is gone (reboot, drop)
or invalid (its COW filled); take a full image with --track again.

Examples:
  dmsnap image md2 --cow /dev/sdb6 --output - | zstd > md2.img.zst
  dmsnap image md2 --cow /dev/sdb6 --output /srv/md2.img --track
  dmsnap image md2 --cow /dev/sdb7 --update /srv/md2.img
  dmsnap image md2 --cow /dev/sdb6 --delta - | restic backup --stdin --stdin-filename md2.delta`,
  options: {
    ...snapshotOptions,
    ...cowFileGuardOptions,
    output: { type: 'string' },
    sparse: { type: 'boolean' },
    track: { type: 'boolean' },
    update: { type: 'string' },
    delta: { type: 'string' },
  },
  allowPositionals: true,
  async run(args, io) {
    const name = one(args, 'NAME');
    if (args.values.update !== undefined || args.values.delta !== undefined) return runIncrement(args, io, name);
    const { output, track, cow, guard } = fullImageArgs(args);
    using dm = await openDm(io);
    const origin = await openOrigin(name, lifecycle(io, dm));
    const fd = (io.stdout as { fd?: unknown }).fd;
    const out = await openImageOutput({
      target: output === '-' ? { stream: io.stdout, fd: typeof fd === 'number' ? fd : undefined } : output,
      guard: await guardOf(dm, origin, cow),
      sizeBytes: origin.sizeBytes,
      sparse: args.values.sparse === true,
      deviceSize: async (path) => (await blockDeviceInfo(path, { binding: io.binding })).sizeBytes,
    });
    let snap: Snapshot | undefined;
    let complete = false;
    let kept = false;
    const release = track ? await origin.lockTracking() : undefined;
    const stopCopy = new AbortController();
    const stopGuard = new AbortController();
    try {
      snap = await snapshotFromArgs(io, origin, args, false, track);
      let lowSpace: HostSpace | undefined;
      startCowFileGuard(io, snap, guard, stopGuard.signal, (space) => {
        lowSpace = space;
        stopCopy.abort(new Error('the free-space guard stopped the copy'));
      });
      const { copied, copyError } = await copySnapshot(io, snap, origin, out, args.values.sparse === true, stopCopy.signal);
      stopGuard.abort();
      if (lowSpace) {
        writeLine(io.stderr, `dmsnap image: ${lowSpaceMessage(name, lowSpace, guard.minFreePercent ?? DEFAULT_MIN_FREE_PERCENT)}`);
        return ExitCode.snapshotInvalid;
      }
      const status = await snap.status();
      if (status.state !== 'active') {
        writeLine(io.stderr, `dmsnap image: ${invalidMessage(name, snap, undefined, `became ${status.state}`)}`);
        return ExitCode.snapshotInvalid;
      }
      if (copyError) throw copyError;
      const file = out.kind === 'new' || out.kind === 'file';
      // The old identity goes first: it must never describe the new image.
      if (file) removeImageIdentity(out.path);
      await out.commit();
      complete = true;
      info(io, `dmsnap: copied ${formatBytes(copied)} of ${name} to ${out.path}`);
      if (track) {
        kept = true;
        await keepTracking(io, origin, snap, file ? out.path : undefined);
      }
      return ExitCode.ok;
    } finally {
      stopGuard.abort();
      if (!complete) await out.discard();
      if (snap && !kept) await snap.drop();
      release?.();
    }
  },
};
