/**
 * `dmsnap recover`: repair what an interrupted dmsnap left behind.
 */
import { recover } from '../snapshot/recover';
import { type Command, ExitCode, openDm, writeLine } from './command';
import { writeJson } from './format';
import { info, lifecycle } from './lifecycle-common';

export const recoverCommand: Command = {
  name: ['recover'],
  summary: 'repair what an interrupted dmsnap left: resume origins, remove half-made snapshots',
  usage: '[--json]',
  help: `Looks only at devices dmsnap created (its uuid tags) and brings each origin to either
"snapshot active and valid" or "no snapshot, linear over NAME-real". Safe to run at any
time, also from a boot unit; running it twice does nothing the second time. Origins that
another dmsnap process is working on are skipped.

Options:
  --json   {"actions": [{"origin", "device", "action", "reason"}]} where action is resumed,
           cleared-inactive-table, removed, restored-linear-table, finished-merge (a
           rollback whose merge was done), removed-cow-file (a COW file whose snapshot is
           gone), skipped or kept

Example:
  dmsnap recover`,
  options: { json: { type: 'boolean' } },
  async run(args, io) {
    using dm = await openDm(io);
    const actions = await recover(lifecycle(io, dm));
    if (args.values.json) {
      writeJson(io, { actions });
      return ExitCode.ok;
    }
    const done = actions.filter((a) => a.action !== 'kept');
    for (const a of done) writeLine(io.stdout, `${a.action} ${a.device}: ${a.reason}`);
    if (done.length === 0) info(io, 'dmsnap: nothing to recover');
    return ExitCode.ok;
  },
};
