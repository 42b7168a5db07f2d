/**
 * The consistency-group arguments that snapshot, backup and image share: NAME... paired in
 * order with --cow DEVICE... or --cow-file FILE... (and --snapshot-name SNAP...), checked
 * before any device is touched; and the group snapshot of backup and image.
 */
import { resolve } from 'node:path';
import { snapshotGroup, type Origin } from '../snapshot';
import type { Snapshot } from '../snapshot/snapshot';
import { MAX_FREEZE_MEMBERS } from '../dm/freeze';
import { checkName, type CliContext, type ParsedArgs, positionals, UsageError } from './command';
import { hooksFromArgs, info, parseCowFile } from './lifecycle-common';
import { parseChunkSize } from './sizes';
import { takeDeferringSignals } from './signals';

/** The snapshot options of backup and image: --cow, --cow-file and --snapshot-name once per NAME. */
export const groupSnapshotOptions = {
  cow: { type: 'string' as const, multiple: true },
  'cow-file': { type: 'string' as const, multiple: true },
  'cow-size': { type: 'string' as const },
  preallocate: { type: 'boolean' as const },
  'chunk-size': { type: 'string' as const },
  'snapshot-name': { type: 'string' as const, multiple: true },
  'force-wipe': { type: 'boolean' as const },
};

/** The values of an option that may be given several times (none: an empty list). */
export function given(args: ParsedArgs, option: string): string[] {
  const value = args.values[option];
  if (value === undefined) return [];
  return (Array.isArray(value) ? value : [value]) as string[];
}

/** The origins and each one's snapshot options, checked before any device is touched. */
export function parseGroup(args: ParsedArgs, io: CliContext, names = positionals(args, 1, MAX_FREEZE_MEMBERS, `NAME (at most ${MAX_FREEZE_MEMBERS})`)) {
  const cows = given(args, 'cow');
  const files = given(args, 'cow-file');
  const snapNames = given(args, 'snapshot-name');
  if (cows.length > 0 && files.length > 0) throw new UsageError('give --cow DEVICE or --cow-file FILE, not both');
  if (cows.length === 0 && files.length === 0) {
    throw new UsageError('--cow DEVICE or --cow-file FILE is required: the block device, or the file dmsnap creates, that receives the copied blocks');
  }
  const paths = cows.length > 0 ? cows : files;
  const option = cows.length > 0 ? '--cow' : '--cow-file';
  if (paths.length !== names.length) throw new UsageError(`give one ${option} per NAME, paired in order: ${names.length} NAME(s), ${paths.length} ${option}`);
  if (snapNames.length > 0 && snapNames.length !== names.length) throw new UsageError(`give --snapshot-name once per NAME or not at all: ${names.length} NAME(s), ${snapNames.length} --snapshot-name`);
  if (new Set(names).size !== names.length) throw new UsageError('each NAME once: a group snapshot takes one snapshot of each origin');
  if (new Set(paths).size !== paths.length) throw new UsageError(`each ${option} once: every snapshot needs a COW of its own`);
  for (const name of names) checkName(name);
  for (const snapName of snapNames) checkName(snapName, '--snapshot-name');
  const chunk = args.values['chunk-size'] as string | undefined;
  const chunkSectors = chunk === undefined ? undefined : parseChunkSize(chunk);
  const members = paths.map((path, i) => ({
    ...(cows.length > 0 ? { cow: checkedPath(path, '--cow') } : { cowFile: parseCowFile(args, checkedPath(path, '--cow-file')) }),
    ...(chunkSectors === undefined ? {} : { chunkSectors }),
    persistent: args.values.transient !== true,
    forceWipe: args.values['force-wipe'] === true,
    ...(snapNames[i] === undefined ? {} : { name: snapNames[i] }),
  }));
  if (cows.length > 0 && args.values['cow-size'] !== undefined) throw new UsageError('--cow-size sizes a COW file: use it with --cow-file');
  if (cows.length > 0 && args.values.preallocate === true) throw new UsageError('--preallocate reserves a COW file: use it with --cow-file');
  return { names, members, hooks: hooksFromArgs(io, args) };
}

/** What parseGroup found: the NAMEs, each one's snapshot options, and the hooks. */
export type GroupPlan = ReturnType<typeof parseGroup>;

function checkedPath(path: string, option: string): string {
  if (path === '') throw new UsageError(`${option} needs a path`);
  return path;
}

/**
 * The arguments of one origin as the one-origin code reads them: each of `paired` (options
 * given once per NAME) given at most once, as a single value.
 */
export function singleArgs(args: ParsedArgs, paired: readonly string[]): ParsedArgs {
  const values = { ...args.values };
  for (const option of paired) {
    const list = given(args, option);
    if (list.length > 1) {
      throw new UsageError(
        option === 'snapshot-name'
          ? `give --snapshot-name once per NAME or not at all: 1 NAME(s), ${list.length} --snapshot-name`
          : `give one --${option} per NAME, paired in order: 1 NAME(s), ${list.length} --${option}`,
      );
    }
    values[option] = list[0];
  }
  return { values, positionals: args.positionals };
}

/** backup's NAME... before "--", and COMMAND [ARGS...] after it; without "--", one NAME and then COMMAND. */
export function splitCommand(args: ParsedArgs): { names: string[]; command: string[] } {
  if (args.beforeTerminator === undefined) {
    const cows = Math.max(given(args, 'cow').length, given(args, 'cow-file').length);
    if (cows > 1) throw new UsageError('with several NAMEs, put "--" between the NAMEs and COMMAND');
    if (args.positionals.length === 0) throw new UsageError('missing NAME');
    if (args.positionals.length === 1) throw new UsageError('missing COMMAND after "--"');
    return { names: args.positionals.slice(0, 1), command: args.positionals.slice(1) };
  }
  const names = positionals({ ...args, positionals: args.positionals.slice(0, args.beforeTerminator) }, 1, MAX_FREEZE_MEMBERS, 'NAME');
  const command = args.positionals.slice(args.beforeTerminator);
  if (command.length === 0) throw new UsageError('missing COMMAND after "--"');
  return { names, command };
}

/** image's --output once per NAME of a group, paired in order: a file or device each, none twice, none a COW file. */
export function groupOutputs(args: ParsedArgs, names: string[]): string[] {
  const outputs = given(args, 'output');
  if (outputs.length !== names.length) throw new UsageError(`give one --output per NAME, paired in order: ${names.length} NAME(s), ${outputs.length} --output`);
  if (outputs.includes('-')) throw new UsageError('--output - (stdout) cannot hold the images of several origins: give one file or device per NAME');
  if (outputs.includes('')) throw new UsageError('--output needs a path');
  const paths = outputs.map((output) => resolve(output));
  if (new Set(paths).size !== paths.length) throw new UsageError('each --output once: every origin needs an image of its own');
  const cowFiles = given(args, 'cow-file').map((file) => resolve(file));
  if (paths.some((path) => cowFiles.includes(path))) throw new UsageError('--output and --cow-file name the same file');
  return outputs;
}

/**
 * Takes the group's snapshots (one for each origin, in `plan`'s order) and says how long the
 * origins were frozen. Each snapshot taken is added to `taken` at once, for the caller to
 * drop: also those of a post-thaw hook's failure (ERR_DMSNAP_HOOK_FAILED), which stand
 * but are not used.
 */
export async function takeGroup(io: CliContext, plan: GroupPlan, origins: readonly Origin[], taken: Snapshot[]): Promise<Snapshot[]> {
  let snaps: Snapshot[];
  try {
    snaps = await takeDeferringSignals(() => snapshotGroup(
      origins.map((origin, i) => ({ origin, ...plan.members[i] })),
      { hooks: plan.hooks },
    ));
  } catch (error) {
    taken.push(...((error as { snapshots?: Snapshot[] }).snapshots ?? []));
    throw error;
  }
  taken.push(...snaps);
  info(io, `dmsnap: ${plan.names.join(', ')} ${plan.names.length === 1 ? 'was' : 'were'} frozen for ${snaps[0].freezeMs!.toFixed(1)} ms`);
  return snaps;
}

/** Drops every snapshot of `snaps`, each also when another fails; the first error is thrown once all were tried. */
export async function dropAll(snaps: readonly Snapshot[], before?: (snap: Snapshot) => Promise<void>): Promise<void> {
  let failure: { error: unknown } | undefined;
  for (const snap of snaps) {
    try {
      await before?.(snap);
      await snap.drop();
    } catch (error) {
      failure ??= { error };
    }
  }
  if (failure) throw failure.error;
}
