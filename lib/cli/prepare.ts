/**
 * `dmsnap prepare`, `dmsnap detach` and `dmsnap release`: wrap a block device for
 * snapshots (bringing back the ones a detach left), and undo it.
 */
import { basename } from 'node:path';
import { DmsnapError } from '../errors';
import { listOrigins, openOrigin, prepare, type AttachResult, type Origin } from '../snapshot';
import { System } from '../system/system';
import { checkName, type Command, ExitCode, one, type ParsedArgs, UsageError, withOne, writeLine } from './command';
import { info, lifecycle } from './lifecycle-common';

const ATTACHED = { attached: 'attached', merging: 'resumed the rollback to', 'rollback-started': 'started the rollback recorded with --at-boot to', refused: 'refused' } as const;

export const prepareCommand: Command = {
  name: ['prepare'],
  summary: 'wrap a block device for snapshots, before it is mounted (step 0)',
  usage: 'DEVICE [--name NAME] [--attach COW]...',
  help: `Creates /dev/mapper/NAME (mount the filesystem there, not on DEVICE) and NAME-real.
Prints /dev/mapper/NAME. Run it again for the same device: it does nothing.

Options:
  --name NAME    the wrapper's name (default: DEVICE's base name)
  --attach COW   bring back the snapshot on COW (a device; repeat for more), as
                 "dmsnap detach" left it: only if DEVICE was not written since.
                 A COW that cannot be attached is reported on stderr and left as
                 it is; DEVICE is prepared all the same (exit 0)

Examples:
  dmsnap prepare /dev/md2 && mount /dev/mapper/md2 /srv
  dmsnap prepare /dev/md2 --attach /dev/sdc1      # at boot, after "dmsnap detach md2"`,
  options: { name: { type: 'string' }, attach: { type: 'string', multiple: true } },
  allowPositionals: true,
  run: async (args, io) => {
    const attach = checkPrepareArgs(args);
    return withOne(args, io, 'DEVICE', async (device, dm) => {
      const onAttach = (result: AttachResult) => {
        if (result.outcome === 'refused') writeLine(io.stderr, `dmsnap prepare: refused the COW ${result.cow}: ${result.reason}; it was left as it is`);
        else info(io, `dmsnap prepare: ${ATTACHED[result.outcome]} snapshot ${result.snapshot} from ${result.cow}`);
        if (result.outcome === 'merging' && result.reason) writeLine(io.stderr, `dmsnap prepare: warning: ${result.reason}`);
      };
      const origin = await prepare(device, { ...lifecycle(io, dm), name: args.values.name as string | undefined, attach, onAttach });
      writeLine(io.stdout, origin.devicePath);
      return ExitCode.ok;
    }, false);
  },
};

/** Checks DEVICE, the wrapper's name (and NAME-real, NAME-snap) and the --attach COWs; returns those. */
function checkPrepareArgs(args: ParsedArgs): string[] {
  const device = one(args, 'DEVICE');
  if (device === '') throw new UsageError('DEVICE must be a path such as /dev/md2; got ""');
  const name = (args.values.name as string | undefined) ?? basename(device);
  const what = args.values.name === undefined ? 'the base name of DEVICE (choose a name with --name)' : '--name';
  checkName(name, what);
  checkName(`${name}-real`, `${what}, with "-real" appended,`);
  checkName(`${name}-snap`, `${what}, with "-snap" appended,`);
  const attach = (args.values.attach as string[] | undefined) ?? [];
  if (attach.includes('')) throw new UsageError('--attach needs a COW device');
  return attach;
}

export const detachCommand: Command = {
  name: ['detach'],
  summary: 'undo prepare at shutdown, keeping the snapshots on COW devices for the next prepare --attach',
  usage: 'NAME|DEVICE',
  help: `Run once the filesystem on /dev/mapper/NAME is unmounted (the prepare unit runs it
at shutdown). Seals each snapshot on a COW device with a fingerprint of the origin's
filesystem (ext4, XFS with an internal log, btrfs) and removes NAME, its snapshots and
NAME-real. "dmsnap prepare DEVICE --attach COW" brings a snapshot back while DEVICE
still shows that fingerprint. Snapshots on COW files and transient ones are dropped.
Prints one line per snapshot kept: NAME COW STATE. Exit 4 while something is mounted.

Example:
  umount /srv && dmsnap detach md2`,
  options: {},
  allowPositionals: true,
  run: async (args, io) => {
    const target = one(args, 'NAME');
    if (!target.startsWith('/')) checkName(target);
    return withOne(args, io, 'NAME', async (nameOrDevice, dm) => {
      const options = lifecycle(io, dm);
      const origin = nameOrDevice.startsWith('/') ? await originOfDevice(nameOrDevice, options) : await openOrigin(nameOrDevice, options);
      const report = await origin.detach();
      for (const kept of report.sealed) writeLine(io.stdout, `${kept.snapshot} ${kept.cow} ${kept.state}`);
      for (const dropped of report.dropped) info(io, `dmsnap detach: dropped ${dropped} (transient or on a COW file: it cannot outlive the detach)`);
      if (report.rollbackAtBoot) info(io, `dmsnap detach: the next "dmsnap prepare --attach" rolls ${report.origin} back to ${report.rollbackAtBoot} (recorded with --at-boot)`);
      return ExitCode.ok;
    }, false);
  },
};

/** The origin whose backing device is `device` (a path under /dev); ENXIO when none is. */
async function originOfDevice(device: string, options: ReturnType<typeof lifecycle>): Promise<Origin> {
  const dm = options.dm;
  const number = await System.of(dm).deviceNumber(device);
  const origin = (await listOrigins(options)).find((o) => o.backing.major === number.major && o.backing.minor === number.minor);
  if (!origin) throw new DmsnapError(`${device} is not prepared: no dmsnap origin wraps it`, 'ENXIO');
  return origin;
}

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
