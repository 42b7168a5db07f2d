/**
 * `dmsnap snapshot`: take a snapshot of a prepared origin and print its device.
 */
import { openOrigin } from '../snapshot';
import { type Command, ExitCode, withOne, writeLine } from './command';
import { lifecycle, requireCow, snapshotOptions, snapshotFromArgs } from './lifecycle-common';

export const snapshotCommand: Command = {
  name: ['snapshot'],
  summary: 'take a snapshot of a prepared origin (step 1); prints its device',
  usage: 'NAME --cow DEVICE|--cow-file FILE [--cow-size SIZE] [--preallocate] [--chunk-size SIZE] [--transient] [--snapshot-name SNAP] [--force-wipe]',
  help: `The copied blocks go to a COW device (--cow) or to a COW file (--cow-file). The first
chunk of a COW device is zeroed; a COW that holds a filesystem or other signature is
refused unless --force-wipe. A COW file is created by dmsnap (FILE must not exist),
sparse, and attached to a loop device of its own; by default it is as large as the origin
plus the exception store's metadata, so that the origin's writes alone can never fill it.
It must be on another filesystem than NAME's, in a directory only root controls; drop
deletes it. Prints the snapshot's device on stdout and the freeze time on stderr.

Options:
  --cow DEVICE            block device for the copied blocks
  --cow-file FILE         or a new file for them, on another filesystem
  --cow-size SIZE         the COW file's size (a plain number counts sectors; 2G, 500M)
  --preallocate           reserve the COW file's space now (fallocate), not as it fills
  --chunk-size SIZE       sectors (32) or a size (16k, 64KiB, 1M); default 32 sectors
  --transient             a transient (N) snapshot instead of a persistent (P) one
  --snapshot-name SNAP    the snapshot's name (default NAME-snap)
  --force-wipe            overwrite a COW device that holds data

Example:
  dmsnap snapshot md2 --cow /dev/sdb6 --chunk-size 64k
  dmsnap snapshot md2 --cow-file /var/tmp/md2.cow`,
  options: { ...snapshotOptions, transient: { type: 'boolean' } },
  allowPositionals: true,
  run: (args, io) => {
    requireCow(args); // usage errors before anything else
    return withOne(args, io, 'NAME', async (name, dm) => {
      const origin = await openOrigin(name, lifecycle(io, dm));
      const snap = await snapshotFromArgs(io, origin, args, args.values.transient === true);
      writeLine(io.stdout, snap.devicePath);
      return ExitCode.ok;
    });
  },
};
