/**
 * What the lifecycle commands share: lock options, informational messages, the snapshot
 * options and the messages for a snapshot taken or lost.
 */
import type { DeviceMapper } from '../dm/device-mapper';
import type { Origin } from '../snapshot';
import { cowLabel, type Snapshot, type SnapshotStatusReport } from '../snapshot/snapshot';
import { type CliContext, type ParsedArgs, UsageError, writeLine } from './command';
import { sectorsToBytes } from '../units';
import { formatBytes, parseByteSize, parseChunkSize } from './sizes';
import { guardCowFile, type HostSpace } from '../snapshot/cow-guard';
import { trackingName, type IncrementSnapshotOptions } from '../snapshot/incremental';
import type { FreezeHookOptions } from '../system/hooks';
import { takeDeferringSignals } from './signals';

/** Lifecycle options; DMSNAP_LOCK_DIR and DMSNAP_LOCK_TIMEOUT (seconds) override the lock defaults. */
export function lifecycle(io: CliContext, dm: DeviceMapper) {
  const timeout = process.env.DMSNAP_LOCK_TIMEOUT;
  const seconds = timeout === undefined ? undefined : Number(timeout);
  if (seconds !== undefined && !(seconds >= 0)) throw new UsageError(`DMSNAP_LOCK_TIMEOUT must be a number of seconds; got "${timeout}"`);
  return {
    dm,
    lockDir: io.lockDir ?? process.env.DMSNAP_LOCK_DIR,
    ...(seconds === undefined ? {} : { lockTimeoutMs: Math.round(seconds * 1000) }),
  };
}

/** An informational message on stderr, unless -q. */
export function info(io: CliContext, text: string): void {
  if (!io.quiet) writeLine(io.stderr, text);
}

/** The application hooks around the freeze, for every command that takes a snapshot. */
export const hookOptions = {
  'pre-freeze': { type: 'string' as const },
  'post-thaw': { type: 'string' as const },
  'hook-dir': { type: 'string' as const },
  'no-hooks': { type: 'boolean' as const },
  'hook-timeout': { type: 'string' as const },
};

/** The help lines of hookOptions. */
export const hookHelp = `  --pre-freeze CMD        run CMD (sh -c) before the freeze; its failure aborts with nothing changed
  --post-thaw CMD         run CMD after the thaw, also when the snapshot failed
  --hook-dir DIR          run the hooks in DIR (default /etc/dmsnap/hooks.d, when it exists)
  --no-hooks              run no hook directory
  --hook-timeout SECONDS  each hook's time limit (default 30); a hook past it is killed`;

/**
 * The hooks of --pre-freeze, --post-thaw, --hook-dir, --no-hooks and --hook-timeout;
 * DMSNAP_HOOK_DIR replaces the default directory. Hook output goes to stderr.
 */
export function hooksFromArgs(io: CliContext, args: ParsedArgs): FreezeHookOptions {
  const text = (option: string) => {
    const value = args.values[option] as string | undefined;
    if (value !== undefined && value.trim() === '') throw new UsageError(`--${option} needs a value`);
    return value;
  };
  const pre = text('pre-freeze');
  const post = text('post-thaw');
  const dir = text('hook-dir');
  const timeout = text('hook-timeout');
  if (dir !== undefined && args.values['no-hooks'] === true) throw new UsageError('give --hook-dir DIR or --no-hooks, not both');
  if (dir !== undefined && !dir.startsWith('/')) throw new UsageError(`--hook-dir needs an absolute path; got "${dir}"`);
  const seconds = timeout === undefined ? undefined : Number(timeout);
  if (seconds !== undefined && !(seconds > 0 && seconds <= 3600)) throw new UsageError(`--hook-timeout must be a number of seconds above 0 and at most 3600; got "${timeout}"`);
  // Without --hook-dir, the default directory is used when it exists.
  const hookDir = args.values['no-hooks'] === true ? false : (dir ?? process.env.DMSNAP_HOOK_DIR);
  return {
    ...(pre === undefined ? {} : { preFreeze: pre }),
    ...(post === undefined ? {} : { postThaw: post }),
    ...(hookDir === undefined ? {} : { hookDir }),
    ...(seconds === undefined ? {} : { timeoutMs: Math.round(seconds * 1000) }),
    output: io.stderr,
  };
}

/** Where the copied blocks go: --cow DEVICE, or --cow-file FILE (with --cow-size). Exactly one is required. */
export type CowChoice = { cow: string } | { cowFile: { path: string; sizeBytes?: number; preallocate?: boolean } };

/** The --cow or --cow-file option, one of which the commands that take a snapshot require. */
export function requireCow(args: ParsedArgs): CowChoice {
  const cow = args.values.cow as string | undefined;
  const file = args.values['cow-file'] as string | undefined;
  const size = args.values['cow-size'] as string | undefined;
  if (cow !== undefined && file !== undefined) throw new UsageError('give --cow DEVICE or --cow-file FILE, not both');
  if (cow === undefined && file === undefined) {
    throw new UsageError('--cow DEVICE or --cow-file FILE is required: the block device, or the file dmsnap creates, that receives the copied blocks');
  }
  if (size !== undefined && file === undefined) throw new UsageError('--cow-size sizes a COW file: use it with --cow-file');
  const preallocate = args.values.preallocate === true;
  if (preallocate && file === undefined) throw new UsageError('--preallocate reserves a COW file: use it with --cow-file');
  if (file === '' || cow === '') throw new UsageError(`${file === '' ? '--cow-file' : '--cow'} needs a path`);
  if (cow !== undefined) return { cow };
  return { cowFile: parseCowFile(args, file!) };
}

/** A COW file at `path`, sized and preallocated as --cow-size and --preallocate say. */
export function parseCowFile(args: ParsedArgs, path: string): { path: string; sizeBytes?: number; preallocate?: boolean } {
  const size = args.values['cow-size'] as string | undefined;
  const preallocate = args.values.preallocate === true;
  return { path, ...(size === undefined ? {} : { sizeBytes: parseByteSize(size, '--cow-size') }), ...(preallocate ? { preallocate } : {}) };
}

/**
 * Takes a snapshot from the options of a one-origin image, and says how long NAME was
 * frozen. After a post-thaw hook's failure, the snapshot is dropped before the error is thrown.
 */
export async function snapshotFromArgs(io: CliContext, origin: Origin, args: ParsedArgs, transient = false, tracking = false): Promise<Snapshot> {
  const [snap] = await takeDeferringSignals(async () => [await snapshotWithHooks(io, origin, args, transient, tracking)]);
  info(io, `dmsnap: ${origin.name} was frozen for ${snap.freezeMs!.toFixed(1)} ms`);
  return snap;
}

/** The snapshot itself; after a post-thaw failure, the snapshot it took is dropped. */
async function snapshotWithHooks(io: CliContext, origin: Origin, args: ParsedArgs, transient: boolean, tracking: boolean): Promise<Snapshot> {
  return origin.snapshot({
    ...snapshotArgs(args),
    hooks: hooksFromArgs(io, args),
    persistent: !transient,
    name: (args.values['snapshot-name'] as string | undefined) ?? (tracking ? trackingName(origin) : undefined),
    tracking,
  }).catch(async (error: unknown) => {
    // Only the post-thaw hooks failed (ERR_DMSNAP_HOOK_FAILED): the snapshot stands, unused; it goes.
    for (const taken of (error as { snapshots?: Snapshot[] }).snapshots ?? []) {
      await taken.drop().catch((dropError: unknown) => {
        (error as Error).message += `; and ${taken.name} could not be dropped: ${(dropError as Error).message}`;
      });
    }
    throw error;
  });
}

/** The COW and chunk size options of a snapshot, as given on the command line. */
export function snapshotArgs(args: ParsedArgs): IncrementSnapshotOptions {
  const chunk = args.values['chunk-size'] as string | undefined;
  return {
    ...requireCow(args),
    chunkSectors: chunk === undefined ? undefined : parseChunkSize(chunk),
    forceWipe: args.values['force-wipe'] === true,
  };
}

/** Describes why a snapshot is no longer usable, with the COW's size and usage. */
export function invalidMessage(name: string, snap: Snapshot, last: SnapshotStatusReport | undefined, reason: string): string {
  const cow = cowLabel(snap.info);
  const size = last?.totalSectors ? `${formatBytes(sectorsToBytes(last.totalSectors))}, ` : '';
  const used = last?.usedPercent != null ? `${last.usedPercent.toFixed(1)}% used` : 'full';
  return `the snapshot of ${name} ${reason}: its COW device ${cow} (${size}${used}) could not hold the blocks changed on ${name} meanwhile; the copy is incomplete. Use a larger COW device or back up at a quieter time`;
}

export const cowFileGuardOptions = {
  'min-free': { type: 'string' as const },
  autoextend: { type: 'string' as const },
};

/** --min-free PERCENT and --autoextend THRESHOLD[:STEP], for a COW file only. */
export function cowFileGuardFromArgs(args: ParsedArgs): { minFreePercent?: number; autoextend?: { thresholdPercent: number; stepPercent?: number } } {
  const minFree = args.values['min-free'] as string | undefined;
  const autoextend = args.values.autoextend as string | undefined;
  if ((minFree !== undefined || autoextend !== undefined) && args.values['cow-file'] === undefined) {
    throw new UsageError(`${minFree !== undefined ? '--min-free' : '--autoextend'} watches a COW file: use it with --cow-file`);
  }
  const result: { minFreePercent?: number; autoextend?: { thresholdPercent: number; stepPercent?: number } } = {};
  if (minFree !== undefined) {
    const value = Number(minFree.replace(/%$/, ''));
    if (minFree.trim() === '' || !(value >= 0 && value < 100)) throw new UsageError(`--min-free must be a percentage from 0 to below 100; got "${minFree}"`);
    result.minFreePercent = value;
  }
  if (autoextend !== undefined) {
    const match = /^(\d+(?:\.\d+)?)%?(?::(\d+(?:\.\d+)?)%?)?$/.exec(autoextend.trim());
    const threshold = match ? Number(match[1]) : NaN;
    const step = match?.[2] === undefined ? undefined : Number(match[2]);
    if (!(threshold >= 50 && threshold < 100) || (step !== undefined && !(step > 0 && step <= 100))) {
      throw new UsageError(`--autoextend must be THRESHOLD[:STEP]: a usage from 50 to below 100 percent, and a step above 0 and at most 100 percent (default 20); got "${autoextend}"`);
    }
    result.autoextend = { thresholdPercent: threshold, ...(step === undefined ? {} : { stepPercent: step }) };
  }
  return result;
}

/**
 * Guards a snapshot's COW file while `command` copies from it (nothing for a COW device):
 * grows it as --autoextend says, and calls `onLowSpace` once its filesystem falls below
 * --min-free. Runs until `signal` aborts.
 */
export function startCowFileGuard(
  io: CliContext,
  snap: Snapshot,
  guard: ReturnType<typeof cowFileGuardFromArgs>,
  signal: AbortSignal,
  onLowSpace: (space: HostSpace) => void,
): void {
  if (!snap.info.cowFile) return;
  void guardCowFile(snap, {
    ...guard,
    lockDir: io.lockDir ?? process.env.DMSNAP_LOCK_DIR,
    signal,
    onLowSpace,
    onExtend: (grown) => info(io, `dmsnap: grew the COW file ${grown.path} to ${formatBytes(grown.sizeBytes)}`),
  }).catch(() => undefined);
}

/** The message of a backup or image stopped by the free-space guard. */
export function lowSpaceMessage(name: string, space: { path: string; freePercent: number }, minFree: number): string {
  return (
    `stopped before the filesystem of the COW file ${space.path} filled: ${space.freePercent.toFixed(1)}% of it is free, below the margin of ${minFree}% (--min-free); ` +
    `the snapshot of ${name} was dropped and the copy is incomplete. Free space there, or put the COW file on a larger filesystem`
  );
}
