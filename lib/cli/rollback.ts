/**
 * `dmsnap rollback`: merge a snapshot back into its origin (lvconvert --merge for a plain
 * device).
 */
import { openOrigin, type Origin } from '../snapshot';
import type { MergeProgress } from '../snapshot/rollback';
import { sectorsToBytes } from '../units';
import { checkName, type CliContext, type Command, ExitCode, UsageError, withOne, writeLine } from './command';
import { info, lifecycle } from './lifecycle-common';
import { ProgressBar } from './progress';
import { formatBytes } from './sizes';

export const rollbackCommand: Command = {
  name: ['rollback'],
  summary: 'roll NAME back to a snapshot: merge it back into the origin (unmount first)',
  usage: 'NAME [--snapshot-name SNAP] [--wait | --at-boot | --cancel]',
  help: `Merges the snapshot's old blocks back into NAME, as "lvconvert --merge" does: NAME reads
as the snapshot from the moment the merge starts (mount it again at once), while the
kernel copies in the background; other snapshots of NAME stay valid. The merged snapshot
goes away when the merge is finished: with --wait, or by the next "dmsnap rollback NAME
--wait", "dmsnap recover" or the monitor. Exits 4 while NAME or the snapshot is mounted
or open, or while another merge runs; 3 for an invalid snapshot.

For a filesystem that cannot be unmounted now, --at-boot records the rollback in the
snapshot's COW label and changes nothing else: the detach at shutdown keeps it, and the
next "dmsnap prepare DEVICE --attach COW" starts the merge before the filesystem is
mounted. The snapshot must be persistent and on a COW device; after a crash instead of
a clean detach, the attach refuses it and nothing is rolled back.

Options:
  --snapshot-name SNAP   the snapshot to roll back to (required when NAME has several)
  --wait                 wait for the merge, with progress on a terminal, and finish it;
                         with no snapshot while a merge runs, wait for that one
  --at-boot              merge at the next boot instead (NAME may stay mounted)
  --cancel               cancel the rollback recorded with --at-boot

Examples:
  umount /srv && dmsnap rollback md2 --wait && mount /dev/mapper/md2 /srv
  dmsnap rollback md2 --at-boot && systemctl reboot`,
  options: { 'snapshot-name': { type: 'string' }, wait: { type: 'boolean' }, 'at-boot': { type: 'boolean' }, cancel: { type: 'boolean' } },
  allowPositionals: true,
  run: async (args, io) => {
    const only = args.values['snapshot-name'] as string | undefined;
    const wait = args.values.wait === true;
    const atBoot = args.values['at-boot'] === true;
    const cancel = args.values.cancel === true;
    if ([wait, atBoot, cancel].filter(Boolean).length > 1) throw new UsageError('--wait, --at-boot and --cancel exclude each other');
    if (cancel && only !== undefined) throw new UsageError('--cancel takes no --snapshot-name: it cancels the rollback recorded for NAME');
    if (only !== undefined) checkName(only, '--snapshot-name');
    return withOne(args, io, 'NAME', async (name, dm) => {
      if (cancel) return cancelAtBoot(io, await openOrigin(name, lifecycle(io, dm)));
      // Looked at before the open, which finishes a merge that is done.
      const merging = only === undefined && wait && (await dm.table(name).catch(() => []))[0]?.type === 'snapshot-merge';
      const origin = await openOrigin(name, lifecycle(io, dm));
      if (merging) {
        await origin.waitForMerge({ onProgress: progressOf(io, name) });
        info(io, `dmsnap: the rollback of ${name} is finished`);
        return ExitCode.ok;
      }
      const snap = await pick(origin, only);
      try {
        await snap.rollback({ wait, atBoot, onProgress: progressOf(io, name) });
      } catch (error) {
        if ((error as { code?: string }).code === 'ERR_DMSNAP_SNAPSHOT_INVALID') {
          info(io, `dmsnap rollback: ${(error as Error).message}`);
          return ExitCode.snapshotInvalid;
        }
        throw error;
      }
      if (atBoot) {
        info(io, `dmsnap: ${name} is rolled back to ${snap.name} at the next "dmsnap prepare --attach", after a clean "dmsnap detach"; "dmsnap rollback ${name} --cancel" cancels it`);
      } else if (wait) {
        info(io, `dmsnap: ${name} is rolled back to ${snap.name}`);
      } else {
        const left = (await origin.merge())?.status;
        const size = left?.state === 'active' ? ` (${formatBytes(sectorsToBytes(left.dataSectors))} to copy)` : '';
        info(io, `dmsnap: ${name} reads as ${snap.name} now; the kernel merges it back in the background${size}: "dmsnap rollback ${name} --wait" finishes it`);
      }
      return ExitCode.ok;
    });
  },
};

/** --cancel: the rollback recorded for the next boot, cancelled; exit 1 when there was none. */
async function cancelAtBoot(io: CliContext, origin: Origin): Promise<number> {
  const cancelled = await origin.cancelRollbackAtBoot();
  if (cancelled === null) {
    writeLine(io.stderr, `dmsnap rollback: ${origin.name} has no rollback recorded for the next boot`);
    return ExitCode.failure;
  }
  info(io, `dmsnap: the rollback of ${origin.name} to ${cancelled} at the next boot is cancelled`);
  return ExitCode.ok;
}

/** The snapshot named, or NAME's only one. */
async function pick(origin: Origin, only: string | undefined) {
  const snaps = await origin.snapshots();
  if (only !== undefined) {
    const snap = snaps.find((s) => s.name === only);
    if (!snap) throw new UsageError(`${origin.name} has no snapshot named "${only}"; see "dmsnap status ${origin.name}"`);
    return snap;
  }
  if (snaps.length === 1) return snaps[0];
  if (snaps.length === 0) throw new UsageError(`${origin.name} has no snapshot to roll back to`);
  throw new UsageError(`${origin.name} has ${snaps.length} snapshots (${snaps.map((s) => s.name).join(', ')}): name one with --snapshot-name`);
}

/** A progress bar of the bytes merged back (a terminal only). */
function progressOf(io: CliContext, name: string): (progress: MergeProgress) => void {
  const bar = new ProgressBar(io.stderr, `${name} rollback`);
  return ({ leftSectors, startSectors }) => {
    const total = sectorsToBytes(startSectors);
    const done = total - sectorsToBytes(leftSectors);
    if (leftSectors === 0) bar.finish(done, total);
    else bar.update(done, total);
  };
}
