/**
 * `dmsnap drop`: remove the snapshots of an origin, all of them or one.
 */
import { DmsnapError } from '../errors';
import { openOrigin } from '../snapshot';
import { checkName, type Command, ExitCode, withOne } from './command';
import { info, lifecycle } from './lifecycle-common';

export const dropCommand: Command = {
  name: ['drop'],
  summary: 'remove snapshots of NAME (all, or one); the last restores the linear table (step 5)',
  usage: 'NAME [--snapshot-name SNAP] [--keep-cow-file]',
  help:
    'Fails with exit code 4 while a snapshot is mounted. A COW file dmsnap created is detached and deleted.\n\n' +
    'Options:\n  --snapshot-name SNAP   drop only this snapshot\n  --keep-cow-file        keep the COW file (a later --cow-file may reuse it)\n\nExample:\n  dmsnap drop md2',
  options: { 'snapshot-name': { type: 'string' }, 'keep-cow-file': { type: 'boolean' } },
  allowPositionals: true,
  run: async (args, io) => {
    const only = args.values['snapshot-name'] as string | undefined;
    if (only !== undefined) checkName(only, '--snapshot-name');
    return withOne(args, io, 'NAME', async (name, dm) => {
      const origin = await openOrigin(name, lifecycle(io, dm));
      const snaps = (await origin.snapshots()).filter((s) => only === undefined || s.name === only);
      if (only !== undefined && snaps.length === 0) {
        throw new DmsnapError(`${name} has no snapshot named "${only}"; see "dmsnap status ${name}"`, 'ENXIO');
      }
      for (const snap of snaps) await snap.drop({ keepCowFile: args.values['keep-cow-file'] === true });
      if (snaps.length === 0) info(io, `dmsnap: ${name} has no snapshots`);
      return ExitCode.ok;
    });
  },
};
