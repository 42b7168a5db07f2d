/**
 * `dmsnap prepare` and `dmsnap release`: wrap a block device for snapshots, and undo it.
 */
import { openOrigin, prepare } from '../snapshot';
import { type Command, ExitCode, withOne, writeLine } from './command';
import { lifecycle } from './lifecycle-common';

export const prepareCommand: Command = {
  name: ['prepare'],
  summary: 'wrap a block device for snapshots, before it is mounted (step 0)',
  usage: 'DEVICE [--name NAME]',
  help: `Creates /dev/mapper/NAME (mount the filesystem there, not on DEVICE) and NAME-real.
Prints /dev/mapper/NAME. Run it again for the same device: it does nothing.

Options:
  --name NAME   the wrapper's name (default: DEVICE's base name)

Example:
  dmsnap prepare /dev/md2 && mount /dev/mapper/md2 /srv`,
  options: { name: { type: 'string' } },
  allowPositionals: true,
  run: (args, io) =>
    withOne(args, io, 'DEVICE', async (device, dm) => {
      const origin = await prepare(device, { ...lifecycle(io, dm), name: args.values.name as string | undefined });
      writeLine(io.stdout, origin.devicePath);
      return ExitCode.ok;
    }),
};

export const releaseCommand: Command = {
  name: ['release'],
  summary: 'undo prepare: remove NAME and NAME-real (no snapshots, not mounted)',
  usage: 'NAME',
  help: 'Example:\n  umount /srv && dmsnap release md2',
  options: {},
  allowPositionals: true,
  run: (args, io) =>
    withOne(args, io, 'NAME', async (name, dm) => {
      await (await openOrigin(name, lifecycle(io, dm))).release();
      return ExitCode.ok;
    }),
};
