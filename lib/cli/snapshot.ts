/**
 * `dmsnap snapshot`: take a snapshot of a prepared origin, or of several at one instant (a
 * consistency group), and print their devices.
 */
import { openOrigin, snapshotGroup, type GroupMember, type Snapshot } from '../snapshot';
import { MAX_FREEZE_MEMBERS } from '../dm/freeze';
import { type Command, ExitCode, openDm, writeLine } from './command';
import { takeDeferringSignals } from './signals';
import { parseGroup } from './group-args';
import { hookHelp, hookOptions, info, lifecycle } from './lifecycle-common';

export const snapshotCommand: Command = {
  name: ['snapshot'],
  summary: 'take a snapshot of a prepared origin, or of several at one instant (step 1); prints their devices',
  usage: 'NAME... --cow DEVICE...|--cow-file FILE... [--cow-size SIZE] [--preallocate] [--chunk-size SIZE] [--transient] [--snapshot-name SNAP...] [--force-wipe] [--pre-freeze CMD] [--post-thaw CMD] [--hook-dir DIR|--no-hooks] [--hook-timeout SECONDS]',
  help: `The copied blocks go to a COW device (--cow) or to a COW file (--cow-file). The first
chunk of a COW device is zeroed; a COW that holds a filesystem or other signature is
refused unless --force-wipe. A COW file is created by dmsnap (FILE must not exist),
sparse, and attached to a loop device of its own; by default it is as large as the origin
plus the exception store's metadata, so that the origin's writes alone can never fill it.
It must be on another filesystem than NAME's, in a directory only root controls; drop
deletes it. Prints the snapshot's device on stdout and the freeze time on stderr.

With several NAMEs (up to ${MAX_FREEZE_MEMBERS}), one snapshot of each is taken at one instant (a
consistency group): every origin is suspended before any is resumed, so the snapshots
hold the state all the filesystems had together. Give one --cow (or one --cow-file) per
NAME, paired in order, and --snapshot-name once per NAME or not at all; --cow-size and
--preallocate apply to every COW file. A failure anywhere leaves every origin as it was.
Prints one device per line, in the order of the NAMEs.

Hooks run around the freeze: --pre-freeze and the hook directory's executables (each
called with "pre-freeze", in name order) before anything is written, --post-thaw and the
directory's (called with "post-thaw", in reverse order) after the freeze, also when the
snapshot failed, also on SIGINT and SIGTERM (dmsnap finishes the snapshot and the hooks,
drops the snapshots and exits 130 or 143).
Hooks see DMSNAP_HOOK_PHASE, DMSNAP_ORIGINS and DMSNAP_SNAPSHOTS; their output goes to
stderr. A pre-freeze hook that fails or passes its time limit aborts the snapshot with
nothing changed (exit 1); a post-thaw failure is reported (exit 1), the snapshots stay.

Options:
  --cow DEVICE            block device for the copied blocks (once per NAME)
  --cow-file FILE         or a new file for them, on another filesystem (once per NAME)
  --cow-size SIZE         the COW file's size (a plain number counts sectors; 2G, 500M)
  --preallocate           reserve the COW file's space now (fallocate), not as it fills
  --chunk-size SIZE       sectors (32) or a size (16k, 64KiB, 1M); default 32 sectors
  --transient             a transient (N) snapshot instead of a persistent (P) one
  --snapshot-name SNAP    the snapshot's name (default NAME-snap)
  --force-wipe            overwrite a COW device that holds data
${hookHelp}

Example:
  dmsnap snapshot md2 --cow /dev/sdb6 --chunk-size 64k
  dmsnap snapshot md2 --cow-file /var/tmp/md2.cow
  dmsnap snapshot pgdata pgwal --cow /dev/sdc1 --cow /dev/sdc2 --pre-freeze 'psql -c CHECKPOINT'`,
  options: {
    cow: { type: 'string', multiple: true },
    'cow-file': { type: 'string', multiple: true },
    'cow-size': { type: 'string' },
    preallocate: { type: 'boolean' },
    'chunk-size': { type: 'string' },
    'snapshot-name': { type: 'string', multiple: true },
    'force-wipe': { type: 'boolean' },
    transient: { type: 'boolean' },
    ...hookOptions,
  },
  allowPositionals: true,
  run: async (args, io) => {
    // Usage errors before anything else.
    const plan = parseGroup(args, io);
    using dm = await openDm(io);
    const options = lifecycle(io, dm);
    const members: GroupMember[] = [];
    for (const [i, name] of plan.names.entries()) members.push({ origin: await openOrigin(name, options), ...plan.members[i] });
    const snaps = await takeDeferringSignals(() => snapshotGroup(members, { hooks: plan.hooks })).catch((error: unknown) => {
      // Only the post-thaw hooks failed: the snapshots stand, and their devices are data.
      const taken = (error as { snapshots?: Snapshot[] }).snapshots;
      for (const snap of taken ?? []) writeLine(io.stdout, snap.devicePath);
      throw error;
    });
    for (const snap of snaps) writeLine(io.stdout, snap.devicePath);
    info(io, `dmsnap: ${plan.names.join(', ')} ${plan.names.length === 1 ? 'was' : 'were'} frozen for ${snaps[0].freezeMs!.toFixed(1)} ms`);
    return ExitCode.ok;
  },
};
