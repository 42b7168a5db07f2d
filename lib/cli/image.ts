/**
 * `dmsnap image`: snapshot one origin (or several at one instant), copy each whole
 * snapshot device to a file, a device or stdout, check that the snapshot stayed valid,
 * drop. The outputs are checked and opened before the snapshot is taken; a regular file
 * is replaced only by a complete, valid image.
 */
import { stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { blockDeviceInfo } from '../system/block-device';
import type { DeviceMapper } from '../dm/device-mapper';
import { copyDevice } from '../snapshot/image';
import { decodeDev, type ImageOutput, openImageOutput, type OutputGuard } from '../snapshot/image-output';
import { MAX_FREEZE_MEMBERS } from '../dm/freeze';
import { openOrigin, type Origin } from '../snapshot';
import type { Snapshot } from '../snapshot/snapshot';
import { deviceStack, devicesAbove, devKey } from '../system/stack';
import { type CliContext, type Command, ExitCode, openDm, type ParsedArgs, positionals, UsageError, writeLine } from './command';
import { dropAll, type GroupPlan, groupOutputs, groupSnapshotOptions, parseGroup, singleArgs, takeGroup } from './group-args';
import { type CowChoice, cowFileGuardFromArgs, cowFileGuardOptions, hookHelp, hookOptions, info, invalidMessage, lifecycle, lowSpaceMessage, requireCow, snapshotFromArgs, startCowFileGuard } from './lifecycle-common';
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

/** A full image of one origin: snapshot, copy, check, then drop (or keep it with --track). */
async function imageOne(args: ParsedArgs, io: CliContext, name: string, checked: ReturnType<typeof fullImageArgs>): Promise<number> {
  const { output, track, cow, guard } = checked;
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
  try {
    snap = await snapshotFromArgs(io, origin, args, false, track);
    const { exit, copied } = await copyAll(io, { names: [name], sparse: args.values.sparse === true, guard }, [origin], [snap], [out]);
    if (exit !== undefined) return exit;
    const file = out.kind === 'new' || out.kind === 'file';
    // The old identity goes first: it must never describe the new image.
    if (file) removeImageIdentity(out.path);
    await out.commit();
    complete = true;
    info(io, `dmsnap: copied ${formatBytes(copied[0])} of ${name} to ${out.path}`);
    if (track) {
      kept = true;
      await keepTracking(io, origin, snap, file ? out.path : undefined);
    }
    return ExitCode.ok;
  } finally {
    if (!complete) await out.discard();
    if (snap && !kept) await snap.drop();
    release?.();
  }
}

/** The outputs of a group image, one per NAME, and its options, checked before anything is touched. */
function groupImageArgs(args: ParsedArgs, io: CliContext, names: string[]) {
  if (['update', 'delta', 'track'].some((option) => args.values[option] !== undefined)) {
    throw new UsageError('incremental images of a group are not supported; image each origin on its own');
  }
  const group = parseGroup(args, io, names);
  const outputs = groupOutputs(args, names);
  return { group, outputs, sparse: args.values.sparse === true, guard: cowFileGuardFromArgs(args) };
}

type GroupImagePlan = ReturnType<typeof groupImageArgs>;

/** What no output of a group may be, nor be on: every origin's devices and every COW (see guardOf). */
async function groupGuard(dm: DeviceMapper, origins: Origin[], group: GroupPlan): Promise<OutputGuard> {
  const guards = await Promise.all(origins.map((origin, i) => guardOf(dm, origin, group.members[i] as CowChoice)));
  const union = (maps: Map<string, string>[]) => {
    const all = new Map<string, string>();
    for (const map of maps) for (const [key, what] of map) if (!all.has(key)) all.set(key, what);
    return all;
  };
  return { devices: union(guards.map((g) => g.devices)), filesystems: union(guards.map((g) => g.filesystems)), nodeDir: guards[0].nodeDir };
}

/** Checks and opens each origin's output before the snapshot; each one opened is added to `outs`. */
async function openOutputs(io: CliContext, plan: GroupImagePlan, origins: Origin[], guard: OutputGuard, outs: ImageOutput[]): Promise<void> {
  for (const [i, output] of plan.outputs.entries()) {
    const out = await openImageOutput({
      target: output,
      guard,
      sizeBytes: origins[i].sizeBytes,
      sparse: plan.sparse,
      deviceSize: async (path) => (await blockDeviceInfo(path, { binding: io.binding })).sizeBytes,
    });
    outs.push(out);
    const twice = outs.find((other) => other !== out && other.path === out.path);
    if (twice) throw new UsageError(`each --output once: ${output} is ${twice.path}, as another --output is`);
  }
}

/** What copyAll copies: the origins' names, whether sparse, and the free-space guard of the COW files. */
interface CopyJob {
  names: string[];
  sparse: boolean;
  guard: ReturnType<typeof cowFileGuardFromArgs>;
}

/**
 * Copies each snapshot to its output in turn while the free-space guard watches every COW
 * file, and checks that each snapshot stayed valid until its copy was done. Returns the
 * bytes copied, or the exit code of an image that cannot be trusted.
 */
async function copyAll(io: CliContext, job: CopyJob, origins: Origin[], snaps: Snapshot[], outs: ImageOutput[]): Promise<{ exit?: number; copied: number[] }> {
  const stopCopy = new AbortController();
  const stopGuard = new AbortController();
  let low: { name: string; space: HostSpace } | undefined;
  for (const [i, snap] of snaps.entries()) {
    startCowFileGuard(io, snap, job.guard, stopGuard.signal, (space) => {
      low ??= { name: job.names[i], space };
      stopCopy.abort(new Error('the free-space guard stopped the copy'));
    });
  }
  try {
    const copied: number[] = [];
    for (const [i, snap] of snaps.entries()) {
      const { copied: bytes, copyError } = await copySnapshot(io, snap, origins[i], outs[i], job.sparse, stopCopy.signal);
      if (low) {
        writeLine(io.stderr, `dmsnap image: ${lowSpaceMessage(low.name, low.space, job.guard.minFreePercent ?? DEFAULT_MIN_FREE_PERCENT)}`);
        return { exit: ExitCode.snapshotInvalid, copied };
      }
      const status = await snap.status();
      if (status.state !== 'active') {
        writeLine(io.stderr, `dmsnap image: ${invalidMessage(job.names[i], snap, undefined, `became ${status.state}`)}`);
        return { exit: ExitCode.snapshotInvalid, copied };
      }
      if (copyError) throw copyError;
      copied.push(bytes);
    }
    return { copied };
  } finally {
    stopGuard.abort();
  }
}

/**
 * Images of several origins at one instant: the outputs opened, one group snapshot, each
 * snapshot copied to its output, the files put in place once every image is complete
 * and valid, then every snapshot dropped, also on failure.
 */
async function imageGroup(args: ParsedArgs, io: CliContext, names: string[]): Promise<number> {
  const plan = groupImageArgs(args, io, names);
  using dm = await openDm(io);
  const options = lifecycle(io, dm);
  const origins: Origin[] = [];
  for (const name of names) origins.push(await openOrigin(name, options));
  const outs: ImageOutput[] = [];
  const snaps: Snapshot[] = [];
  let complete = false;
  try {
    await openOutputs(io, plan, origins, await groupGuard(dm, origins, plan.group), outs);
    await takeGroup(io, plan.group, origins, snaps);
    const { exit, copied } = await copyAll(io, { names, sparse: plan.sparse, guard: plan.guard }, origins, snaps, outs);
    if (exit !== undefined) return exit;
    // The old identities go first: none may describe a new image.
    for (const out of outs) if (out.kind === 'new' || out.kind === 'file') removeImageIdentity(out.path);
    for (const [i, out] of outs.entries()) {
      await out.commit();
      info(io, `dmsnap: copied ${formatBytes(copied[i])} of ${names[i]} to ${out.path}`);
    }
    complete = true;
    return ExitCode.ok;
  } finally {
    if (!complete) for (const out of outs) await out.discard();
    await dropAll(snaps);
  }
}

export const imageCommand: Command = {
  name: ['image'],
  summary: 'snapshot one origin or several at one instant, copy each whole snapshot device to FILE or stdout, then drop',
  usage:
    'NAME --cow DEVICE|--cow-file FILE [--cow-size SIZE] [--min-free PCT] [--autoextend T[:S]] --output FILE|- [--sparse] [--track] [--chunk-size SIZE] [HOOKS]\n' +
    'NAME --cow DEVICE|--cow-file FILE --update IMG | --delta FILE|- [--chunk-size SIZE]\n' +
    'NAME... --cow DEVICE...|--cow-file FILE... --output FILE... [--cow-size SIZE] [--min-free PCT] [--autoextend T[:S]] [--sparse] [--chunk-size SIZE] [HOOKS]\n' +
    '(HOOKS: [--pre-freeze CMD] [--post-thaw CMD] [--hook-dir DIR|--no-hooks] [--hook-timeout SECONDS])',
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

With several NAMEs (up to ${MAX_FREEZE_MEMBERS}), one snapshot of each is taken at one instant (a
consistency group, as by dmsnap snapshot): give one --cow (or one --cow-file) and one
--output per NAME, paired in order, and --snapshot-name once per NAME or not at all.
Every output is checked and opened before the snapshot (none may be in any origin's
device stack, a COW, or on a filesystem on any origin); then each snapshot is copied to
its output in turn, the files replace theirs only once every image is complete and
valid, and every snapshot is dropped. --min-free and --autoextend watch every COW file.
Not for a group: --output - (stdout holds one image), and --update, --delta and --track
(incremental images of a group are not supported; image each origin on its own).

Hooks run around the freeze as for dmsnap snapshot. A pre-freeze failure aborts with
nothing changed (exit 1); after a post-thaw failure the snapshots are dropped unused
(exit 1).

Options:
  --cow DEVICE            block device for the copied blocks (once per NAME)
  --cow-file FILE         or a new file for them, which dmsnap creates (see dmsnap snapshot)
  --cow-size SIZE         the COW file's size (default: the origin's, plus metadata)
  --preallocate           reserve the COW file's space now (fallocate)
  --min-free PCT          with --cow-file: stop (exit 3) when its filesystem has less free (5)
  --autoextend T[:S]      with --cow-file: at T% usage grow it by S% (default 20), as LVM
  --output FILE|-         the image file or device, or - for stdout (a group: a file or
                          device per NAME, paired in order)
  --sparse                leave holes for all-zero blocks (regular files only)
  --chunk-size SIZE       as for dmsnap snapshot; with --update and --delta, default the
                          tracking snapshot's
  --track                 keep the snapshot as NAME's tracking snapshot (its COW stays in use),
                          and write the image's identity to FILE.dmsnap; replaces NAME's
                          previous tracking snapshot
  --update IMG            incremental: a new tracking snapshot, then only the chunks changed
                          since IMG's tracking snapshot copied into IMG (written with --track)
  --delta FILE|-          incremental: those chunks as a delta stream (see dmsnap apply)
  --snapshot-name SNAP    the snapshot's name (default NAME-snap; once per NAME)
  --force-wipe            overwrite a COW device that holds data
${hookHelp}

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
  dmsnap image md2 --cow /dev/sdb6 --delta - | restic backup --stdin --stdin-filename md2.delta
  dmsnap image pgdata pgwal --cow /dev/sdc1 --cow /dev/sdc2 --output /srv/pgdata.img --output /srv/pgwal.img`,
  options: {
    ...groupSnapshotOptions,
    ...cowFileGuardOptions,
    ...hookOptions,
    output: { type: 'string', multiple: true },
    sparse: { type: 'boolean' },
    track: { type: 'boolean' },
    update: { type: 'string' },
    delta: { type: 'string' },
  },
  allowPositionals: true,
  async run(args, io) {
    const names = positionals(args, 1, MAX_FREEZE_MEMBERS, 'NAME');
    if (names.length > 1) return imageGroup(args, io, names);
    const single = singleArgs(args, ['cow', 'cow-file', 'snapshot-name', 'output']);
    if (args.values.update === undefined && args.values.delta === undefined) {
      const checked = fullImageArgs(single);
      // The COW, chunk size and hook options too: every usage error before anything is touched.
      parseGroup(single, io, names);
      return imageOne(single, io, names[0], checked);
    }
    return runIncrement(single, io, names[0]);
  },
};
