/**
 * `dmsnap dm create`, `load`, `clear`, `table`, `status` and `deps`: a device's tables and
 * what its targets report. Plain output of `table` and `status` is byte for byte what
 * dmsetup prints.
 */
import { formatTargetLine, type TargetLine } from '../dm/table';
import { maskTableKeys } from '../targets/keys';
import type { DeviceMapper } from '../dm/device-mapper';
import { checkDeviceUuid } from '../dm/names';
import { type Command, jsonOption, oneName, openDm, type ParsedArgs, UsageError, withOne } from './command';
import { deviceActionCommand, perDeviceCommand, printOutput, readTable, withTargetHint } from './dm-common';

export const createCommand: Command = {
  name: ['dm', 'create'],
  summary: 'create a device, with a table from --table or stdin (like dmsetup create)',
  usage: 'NAME [--uuid UUID] [--readonly] [--table LINE]... [--notable]',
  help: `Table lines are START LENGTH TYPE PARAMS, in 512-byte sectors, as dmsetup reads them.

Options:
  --uuid UUID     give the device a uuid
  --readonly      load the table read-only
  --table LINE    a table line (repeat for several); without it the table is read from stdin
  --notable       create the device without a table

Example:
  echo "0 $(blockdev --getsz /dev/loop0) linear /dev/loop0 0" | dmsnap dm create wrap`,
  options: {
    uuid: { type: 'string' },
    readonly: { type: 'boolean' },
    table: { type: 'string', multiple: true },
    notable: { type: 'boolean' },
  },
  allowPositionals: true,
  async run(args, io) {
    const name = oneName(args);
    if (args.values.uuid !== undefined) checkDeviceUuid(args.values.uuid, '--uuid');
    if (args.values.notable && args.values.table) throw new UsageError('--notable and --table exclude each other');
    const table = args.values.notable ? undefined : await readTable(args, io);
    using dm = await openDm(io);
    const create = () => dm.create(name, { uuid: args.values.uuid as string | undefined, table, readOnly: args.values.readonly === true });
    await (table === undefined ? create() : withTargetHint(dm, table, create));
    return 0;
  },
};

export const loadCommand: Command = {
  name: ['dm', 'load'],
  summary: "load a table into a device's inactive slot (like dmsetup load)",
  usage: 'NAME [--readonly] [--table LINE]...',
  help: 'The table takes effect at the next "dmsnap dm resume NAME".\n\nOptions:\n  --readonly     load the table read-only\n  --table LINE   a table line (repeatable); without it, stdin\n\nExample:\n  dmsnap dm table wrap-real | dmsnap dm load wrap',
  options: { readonly: { type: 'boolean' }, table: { type: 'string', multiple: true } },
  allowPositionals: true,
  async run(args, io) {
    const name = oneName(args);
    const table = await readTable(args, io);
    using dm = await openDm(io);
    await withTargetHint(dm, table, () => dm.load(name, table, { readOnly: args.values.readonly === true }));
    return 0;
  },
};

export const clearCommand = deviceActionCommand(
  { name: ['dm', 'clear'], summary: 'drop the inactive table of a device (like dmsetup clear)', usage: 'NAME', help: 'Example:\n  dmsnap dm clear wrap', options: {} },
  (dm, name) => dm.clear(name),
);

function linesJson(lines: TargetLine[]) {
  return lines.map((l) => ({ start: l.start, length: l.length, type: l.type, params: l.params }));
}

function tableLikeHelp(kind: 'table' | 'status'): string {
  const isStatus = kind === 'status';
  return `Prints START LENGTH TYPE ${isStatus ? 'STATUS' : 'PARAMS'} per target, byte-for-byte as dmsetup does; without NAME, each line is prefixed with "NAME: ".${
    isStatus ? '' : '\nKeys of crypt and integrity targets are shown as zeroes, as dmsetup shows them, unless --showkeys is given.'
  }

Options:
  --inactive   the inactive table instead of the live one${
    isStatus ? '\n  --noflush    do not flush before reading the status' : '\n  --showkeys   show the keys (also in --json)'
  }
  --json       {"devices": [{"name", "targets": [{"start", "length", "type", "params"}]}]}

Example:
  dmsnap dm ${kind} wrap-snap`;
}

/** `dm table` and `dm status`: one line per target, of a device or of every device. */
function tableLikeCommand(kind: 'table' | 'status'): Command {
  const isStatus = kind === 'status';
  const read = async (dm: DeviceMapper, name: string, args: ParsedArgs): Promise<TargetLine[]> => {
    if (isStatus) return dm.status(name, { inactive: args.values.inactive === true, noFlush: args.values.noflush === true });
    const lines = await dm.table(name, { inactive: args.values.inactive === true });
    return args.values.showkeys === true ? lines : maskTableKeys(lines);
  };
  return perDeviceCommand(
    {
      name: ['dm', kind],
      summary: isStatus
        ? "show each target's status, for a device or all devices (like dmsetup status)"
        : 'show the table of a device, or of all devices (like dmsetup table)',
      usage: `[NAME] [--inactive]${isStatus ? ' [--noflush]' : ' [--showkeys]'} [--json]`,
      help: tableLikeHelp(kind),
      options: {
        inactive: { type: 'boolean' },
        ...(isStatus ? { noflush: { type: 'boolean' as const } } : { showkeys: { type: 'boolean' as const } }),
        ...jsonOption,
      },
    },
    read,
    {
      json: (results) => ({ devices: results.map((r) => ({ name: r.name, targets: linesJson(r.data) })) }),
      lines: (results, named) => results.flatMap((r) => r.data.map((line) => `${named ? '' : `${r.name}: `}${formatTargetLine(line)}`)),
    },
  );
}

export const tableCommand = tableLikeCommand('table');
export const statusCommand = tableLikeCommand('status');

export const depsCommand: Command = {
  name: ['dm', 'deps'],
  summary: 'show the devices a table uses (like dmsetup deps)',
  usage: 'NAME [--inactive] [--json]',
  help: 'Options:\n  --inactive   the inactive table\n  --json       {"name", "devices": [{"major", "minor"}]}\n\nExample:\n  dmsnap dm deps wrap',
  options: { inactive: { type: 'boolean' }, ...jsonOption },
  allowPositionals: true,
  run: (args, io) =>
    withOne(args, io, 'NAME', async (name, dm) => {
      const devices = await dm.deps(name, { inactive: args.values.inactive === true });
      printOutput(io, args, () => ({ name, devices }), () => [`${devices.length} dependencies\t:${devices.map((d) => ` (${d.major}, ${d.minor})`).join('')}`]);
      return 0;
    }),
};
