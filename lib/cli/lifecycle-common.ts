/**
 * What the lifecycle commands share: the device-mapper client's lifetime, lock options,
 * positional arguments, the snapshot options and the message for a lost snapshot.
 */
import { DeviceMapper } from '../dm/device-mapper';
import type { Origin } from '../snapshot/origin';
import type { Snapshot, SnapshotStatusReport } from '../snapshot/snapshot';
import { type CliContext, type ParsedArgs, UsageError, writeLine } from './command';
import { formatBytes, parseSectors } from './sizes';

export async function withDm<T>(io: CliContext, fn: (dm: DeviceMapper) => Promise<T>): Promise<T> {
  const dm = await DeviceMapper.open({ binding: io.binding });
  try {
    return await fn(dm);
  } finally {
    dm.close();
  }
}

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

export function one(args: ParsedArgs, what: string): string {
  if (args.positionals.length === 0) throw new UsageError(`missing ${what}`);
  if (args.positionals.length > 1) throw new UsageError(`unexpected argument "${args.positionals[1]}"`);
  return args.positionals[0];
}

export function info(io: CliContext, text: string): void {
  if (!io.quiet) writeLine(io.stderr, text);
}

export const snapshotOptions = {
  cow: { type: 'string' as const },
  'chunk-size': { type: 'string' as const },
  'snapshot-name': { type: 'string' as const },
  'force-wipe': { type: 'boolean' as const },
};

/** Takes a snapshot from the shared options of snapshot, backup and image. */
export async function takeSnapshot(origin: Origin, args: ParsedArgs, transient = false): Promise<Snapshot> {
  const cow = args.values.cow as string | undefined;
  if (!cow) throw new UsageError('--cow DEVICE is required: the block device that receives the copied blocks');
  const chunk = args.values['chunk-size'] as string | undefined;
  return origin.snapshot({
    cow,
    chunkSectors: chunk === undefined ? undefined : parseSectors(chunk, '--chunk-size'),
    persistent: !transient,
    name: args.values['snapshot-name'] as string | undefined,
    forceWipe: args.values['force-wipe'] === true,
  });
}

/** Describes why a snapshot is no longer usable, with the COW's size and usage. */
export function invalidMessage(name: string, snap: Snapshot, last: SnapshotStatusReport | undefined, reason: string): string {
  const cow = snap.info.cow.path ?? `${snap.info.cow.major}:${snap.info.cow.minor}`;
  const size = last?.totalSectors ? `${formatBytes(last.totalSectors * 512)}, ` : '';
  const used = last?.usedPercent != null ? `${last.usedPercent.toFixed(1)}% used` : 'full';
  return `the snapshot of ${name} ${reason}: its COW device ${cow} (${size}${used}) could not hold the blocks changed on ${name} meanwhile; the copy is incomplete. Use a larger COW device or back up at a quieter time`;
}
