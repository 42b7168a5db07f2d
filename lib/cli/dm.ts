/**
 * `dmsnap dm …`: low-level device-mapper commands, named and shaped like dmsetup's so
 * that its users' habits (and scripts) carry over. Plain output of `table` and `status`
 * is byte-for-byte what dmsetup prints; `--json` gives the same data with real types.
 */
import { readFileSync } from 'node:fs';
import { DeviceMapper, type DeviceInfo, type DeviceRef } from '../dm/device-mapper';
import { formatTargetLine, type TargetLine } from '../dm/table';
import { maskTableKeys } from '../targets/keys';
import { VERSION } from '../version';
import { type CliContext, type Command, type ParsedArgs, UsageError, writeLine } from './command';

async function openDm(io: CliContext): Promise<DeviceMapper> {
  return DeviceMapper.open({ binding: io.binding });
}

function json(io: CliContext, value: unknown): void {
  writeLine(io.stdout, JSON.stringify(value, null, 2));
}

function positionals(args: ParsedArgs, min: number, max: number, names: string): string[] {
  if (args.positionals.length < min) throw new UsageError(`missing ${names}`);
  if (args.positionals.length > max) throw new UsageError(`unexpected argument "${args.positionals[max]}"`);
  return args.positionals;
}

/** Table text from --table options (each a line) or, as dmsetup does, from stdin. */
async function readTable(args: ParsedArgs, io: CliContext): Promise<string> {
  const lines = args.values.table as string[] | undefined;
  if (lines && lines.length > 0) return lines.join('\n');
  const chunks: Buffer[] = [];
  for await (const chunk of io.stdin) chunks.push(Buffer.from(chunk as Buffer));
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw new UsageError('no table given: use --table LINE or pipe the table on stdin');
  return text;
}

/** Read-ahead in sectors, as dmsetup info shows it (from sysfs; undefined if unknown). */
function readAheadSectors(info: DeviceInfo): number | undefined {
  try {
    const kib = Number(readFileSync(`/sys/dev/block/${info.major}:${info.minor}/queue/read_ahead_kb`, 'utf8'));
    return Number.isFinite(kib) ? kib * 2 : undefined;
  } catch {
    return undefined;
  }
}

function formatInfo(info: DeviceInfo): string {
  const tables =
    info.liveTable && info.inactiveTable ? 'LIVE & INACTIVE' : info.liveTable ? 'LIVE' : info.inactiveTable ? 'INACTIVE' : 'None';
  const state = `${info.suspended ? 'SUSPENDED' : 'ACTIVE'}${info.readOnly ? ' (READ-ONLY)' : ''}${
    info.deferredRemove ? ' (DEFERRED REMOVE)' : ''
  }`;
  const lines = [`Name:              ${info.name}`, `State:             ${state}`];
  const readAhead = readAheadSectors(info);
  if (readAhead !== undefined) lines.push(`Read Ahead:        ${readAhead}`);
  lines.push(
    `Tables present:    ${tables}`,
    `Open count:        ${info.openCount}`,
    `Event number:      ${info.eventNr}`,
    `Major, minor:      ${info.major}, ${info.minor}`,
  );
  if (info.liveTable || info.inactiveTable) lines.push(`Number of targets: ${info.targetCount}`);
  if (info.uuid) lines.push(`UUID: ${info.uuid}`);
  return `${lines.join('\n')}\n`;
}

function linesJson(lines: TargetLine[]) {
  return lines.map((l) => ({ start: l.start, length: l.length, type: l.type, params: l.params }));
}

/** Runs `each` for the named device, or for every device (dmsetup's behaviour without a name). */
async function forEachDevice(
  dm: DeviceMapper,
  name: string | undefined,
  each: (name: string) => Promise<void>,
): Promise<boolean> {
  if (name !== undefined) {
    await each(name);
    return true;
  }
  const devices = await dm.list();
  for (const device of devices) await each(device.name);
  return devices.length > 0;
}

const jsonOption = { json: { type: 'boolean' as const } };

const version: Command = {
  name: ['dm', 'version'],
  summary: 'print the dmsnap and device-mapper driver versions',
  usage: '[--json]',
  help: 'Options:\n  --json   print {"dmsnap": "…", "driver": "…"}\n\nExample:\n  dmsnap dm version',
  options: jsonOption,
  async run(args, io) {
    using dm = await openDm(io);
    const driver = await dm.version();
    if (args.values.json) {
      json(io, { dmsnap: VERSION, driver: driver.text });
    } else {
      writeLine(io.stdout, `dmsnap version:    ${VERSION}`);
      writeLine(io.stdout, `Driver version:    ${driver.text}`);
    }
    return 0;
  },
};

const ls: Command = {
  name: ['dm', 'ls'],
  summary: 'list device-mapper devices (like dmsetup ls)',
  usage: '[--json]',
  help: 'Prints NAME<TAB>(MAJOR:MINOR) per device, sorted by name.\n\nOptions:\n  --json   {"devices": [{"name", "major", "minor", "uuid", "eventNr"}]}\n\nExample:\n  dmsnap dm ls --json',
  options: jsonOption,
  async run(args, io) {
    using dm = await openDm(io);
    const devices = await dm.list();
    if (args.values.json) {
      json(io, { devices: devices.map((d) => ({ name: d.name, major: d.major, minor: d.minor, uuid: d.uuid ?? null, eventNr: d.eventNr ?? null })) });
    } else if (devices.length === 0) {
      writeLine(io.stdout, 'No devices found');
    } else {
      for (const d of devices) writeLine(io.stdout, `${d.name}\t(${d.major}:${d.minor})`);
    }
    return 0;
  },
};

const targets: Command = {
  name: ['dm', 'targets'],
  summary: 'list the target types the kernel has loaded (like dmsetup targets)',
  usage: '[--json]',
  help: 'Options:\n  --json   {"targets": [{"name", "version"}]}\n\nExample:\n  dmsnap dm targets',
  options: jsonOption,
  async run(args, io) {
    using dm = await openDm(io);
    const list = await dm.targets();
    if (args.values.json) {
      json(io, { targets: list.map((t) => ({ name: t.name, version: t.text })) });
    } else {
      for (const t of list) writeLine(io.stdout, `${t.name.padEnd(16)} v${t.text}`);
    }
    return 0;
  },
};

const create: Command = {
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
    const [name] = positionals(args, 1, 1, 'NAME');
    if (args.values.notable && args.values.table) throw new UsageError('--notable and --table exclude each other');
    const table = args.values.notable ? undefined : await readTable(args, io);
    using dm = await openDm(io);
    await dm.create(name, {
      uuid: args.values.uuid as string | undefined,
      table,
      readOnly: args.values.readonly === true,
    });
    return 0;
  },
};

const load: Command = {
  name: ['dm', 'load'],
  summary: "load a table into a device's inactive slot (like dmsetup load)",
  usage: 'NAME [--readonly] [--table LINE]...',
  help: 'The table takes effect at the next "dmsnap dm resume NAME".\n\nOptions:\n  --readonly     load the table read-only\n  --table LINE   a table line (repeatable); without it, stdin\n\nExample:\n  dmsnap dm table wrap-real | dmsnap dm load wrap',
  options: { readonly: { type: 'boolean' }, table: { type: 'string', multiple: true } },
  allowPositionals: true,
  async run(args, io) {
    const [name] = positionals(args, 1, 1, 'NAME');
    const table = await readTable(args, io);
    using dm = await openDm(io);
    await dm.load(name, table, { readOnly: args.values.readonly === true });
    return 0;
  },
};

const clear: Command = {
  name: ['dm', 'clear'],
  summary: 'drop the inactive table of a device (like dmsetup clear)',
  usage: 'NAME',
  help: 'Example:\n  dmsnap dm clear wrap',
  options: {},
  allowPositionals: true,
  async run(args, io) {
    const [name] = positionals(args, 1, 1, 'NAME');
    using dm = await openDm(io);
    await dm.clear(name);
    return 0;
  },
};

const suspend: Command = {
  name: ['dm', 'suspend'],
  summary: 'suspend a device, freezing a filesystem on it (like dmsetup suspend)',
  usage: 'NAME [--nolockfs] [--noflush]',
  help: 'Options:\n  --nolockfs   do not freeze the filesystem\n  --noflush    do not flush queued I/O\n\nExample:\n  dmsnap dm suspend wrap && dmsnap dm resume wrap',
  options: { nolockfs: { type: 'boolean' }, noflush: { type: 'boolean' } },
  allowPositionals: true,
  async run(args, io) {
    const [name] = positionals(args, 1, 1, 'NAME');
    using dm = await openDm(io);
    await dm.suspend(name, { skipLockfs: args.values.nolockfs === true, noFlush: args.values.noflush === true });
    return 0;
  },
};

const resume: Command = {
  name: ['dm', 'resume'],
  summary: 'resume a device, making a loaded table live (like dmsetup resume)',
  usage: 'NAME [--nolockfs] [--noflush]',
  help: 'Options:\n  --nolockfs   do not freeze the filesystem if a table swap needs a suspend\n  --noflush    do not flush queued I/O for that suspend\n\nExample:\n  dmsnap dm resume wrap',
  options: { nolockfs: { type: 'boolean' }, noflush: { type: 'boolean' } },
  allowPositionals: true,
  async run(args, io) {
    const [name] = positionals(args, 1, 1, 'NAME');
    using dm = await openDm(io);
    await dm.resume(name, { skipLockfs: args.values.nolockfs === true, noFlush: args.values.noflush === true });
    return 0;
  },
};

const remove: Command = {
  name: ['dm', 'remove'],
  summary: 'remove devices (like dmsetup remove)',
  usage: 'NAME... [--deferred] [--retry]',
  help: 'Options:\n  --deferred   if a device is in use, remove it when its last user closes it\n  --retry      retry for about 5 s while the device is busy (udev or blkid may hold it briefly)\n\nExample:\n  dmsnap dm remove --retry wrap-snap',
  options: { deferred: { type: 'boolean' }, retry: { type: 'boolean' } },
  allowPositionals: true,
  async run(args, io) {
    const names = positionals(args, 1, Infinity, 'NAME');
    using dm = await openDm(io);
    for (const name of names) {
      await dm.remove(name, { deferred: args.values.deferred === true, retry: args.values.retry === true });
    }
    return 0;
  },
};

const rename: Command = {
  name: ['dm', 'rename'],
  summary: 'rename a device, or set its uuid with --setuuid (like dmsetup rename)',
  usage: 'OLD NEW | NAME --setuuid UUID',
  help: 'A uuid can only be set on a device that has none.\n\nExamples:\n  dmsnap dm rename old new\n  dmsnap dm rename new --setuuid MY-UUID-1',
  options: { setuuid: { type: 'string' } },
  allowPositionals: true,
  async run(args, io) {
    using dm = await openDm(io);
    if (args.values.setuuid !== undefined) {
      const [name] = positionals(args, 1, 1, 'NAME');
      await dm.setUuid(name, args.values.setuuid as string);
    } else {
      const [from, to] = positionals(args, 2, 2, 'OLD and NEW');
      await dm.rename(from, to);
    }
    return 0;
  },
};

const info: Command = {
  name: ['dm', 'info'],
  summary: 'show the state of a device, or of all devices (like dmsetup info)',
  usage: '[NAME] [--json]',
  help: 'Options:\n  --json   {"devices": [{"name", "uuid", "major", "minor", "openCount", "eventNr", "targetCount", "suspended", "readOnly", "liveTable", "inactiveTable", "deferredRemove", "readAheadSectors"}]}\n\nExample:\n  dmsnap dm info wrap',
  options: jsonOption,
  allowPositionals: true,
  async run(args, io) {
    const [name] = positionals(args, 0, 1, 'NAME');
    using dm = await openDm(io);
    const all: DeviceInfo[] = [];
    const any = await forEachDevice(dm, name, async (n) => {
      all.push(await dm.info(n));
    });
    if (args.values.json) {
      json(io, { devices: all.map((d) => ({ ...d, readAheadSectors: readAheadSectors(d) ?? null })) });
    } else if (!any) {
      writeLine(io.stdout, 'No devices found');
    } else {
      for (const d of all) writeLine(io.stdout, formatInfo(d));
    }
    return 0;
  },
};

function tableLikeCommand(kind: 'table' | 'status'): Command {
  const isStatus = kind === 'status';
  return {
    name: ['dm', kind],
    summary: isStatus
      ? "show each target's status, for a device or all devices (like dmsetup status)"
      : 'show the table of a device, or of all devices (like dmsetup table)',
    usage: `[NAME] [--inactive]${isStatus ? ' [--noflush]' : ' [--showkeys]'} [--json]`,
    help: `Prints START LENGTH TYPE ${isStatus ? 'STATUS' : 'PARAMS'} per target, byte-for-byte as dmsetup does; without NAME, each line is prefixed with "NAME: ".${
      isStatus ? '' : '\nKeys of crypt and integrity targets are shown as zeroes, as dmsetup shows them, unless --showkeys is given.'
    }

Options:
  --inactive   the inactive table instead of the live one${
    isStatus ? '\n  --noflush    do not flush before reading the status' : '\n  --showkeys   show the keys (also in --json)'
  }
  --json       {"devices": [{"name", "targets": [{"start", "length", "type", "params"}]}]}

Example:
  dmsnap dm ${kind} wrap-snap`,
    options: {
      inactive: { type: 'boolean' },
      ...(isStatus ? { noflush: { type: 'boolean' as const } } : { showkeys: { type: 'boolean' as const } }),
      ...jsonOption,
    },
    allowPositionals: true,
    async run(args, io) {
      const [name] = positionals(args, 0, 1, 'NAME');
      using dm = await openDm(io);
      const results: { name: string; targets: TargetLine[] }[] = [];
      const any = await forEachDevice(dm, name, async (n) => {
        const lines = isStatus
          ? await dm.status(n, { inactive: args.values.inactive === true, noFlush: args.values.noflush === true })
          : await dm.table(n, { inactive: args.values.inactive === true });
        results.push({ name: n, targets: isStatus || args.values.showkeys === true ? lines : maskTableKeys(lines) });
      });
      if (args.values.json) {
        json(io, { devices: results.map((r) => ({ name: r.name, targets: linesJson(r.targets) })) });
      } else if (!any) {
        writeLine(io.stdout, 'No devices found');
      } else {
        for (const r of results) {
          for (const line of r.targets) writeLine(io.stdout, `${name === undefined ? `${r.name}: ` : ''}${formatTargetLine(line)}`);
        }
      }
      return 0;
    },
  };
}

const deps: Command = {
  name: ['dm', 'deps'],
  summary: 'show the devices a table uses (like dmsetup deps)',
  usage: 'NAME [--inactive] [--json]',
  help: 'Options:\n  --inactive   the inactive table\n  --json       {"name", "devices": [{"major", "minor"}]}\n\nExample:\n  dmsnap dm deps wrap',
  options: { inactive: { type: 'boolean' }, ...jsonOption },
  allowPositionals: true,
  async run(args, io) {
    const [name] = positionals(args, 1, 1, 'NAME');
    using dm = await openDm(io);
    const devices = await dm.deps(name, { inactive: args.values.inactive === true });
    if (args.values.json) {
      json(io, { name, devices });
    } else {
      writeLine(io.stdout, `${devices.length} dependencies\t:${devices.map((d) => ` (${d.major}, ${d.minor})`).join('')}`);
    }
    return 0;
  },
};

const message: Command = {
  name: ['dm', 'message'],
  summary: 'send a message to a target (like dmsetup message)',
  usage: 'NAME SECTOR MESSAGE...',
  help: 'Prints the reply, if the target gives one.\n\nExample:\n  dmsnap dm message pool 0 "create_thin 0"',
  options: {},
  allowPositionals: true,
  async run(args, io) {
    const [name, sectorText, ...words] = positionals(args, 3, Infinity, 'NAME, SECTOR and MESSAGE');
    if (!/^\d+$/.test(sectorText)) throw new UsageError(`SECTOR must be a whole number of sectors; got "${sectorText}"`);
    using dm = await openDm(io);
    const reply = await dm.message(name, Number(sectorText), words.join(' '));
    if (reply) writeLine(io.stdout, reply);
    return 0;
  },
};

const wait: Command = {
  name: ['dm', 'wait'],
  summary: "wait until a device's event counter differs from EVENT_NR (like dmsetup wait)",
  usage: 'NAME [EVENT_NR] [--timeout SECONDS] [--json]',
  help: 'Without EVENT_NR it waits for the next event. Exits 1 on timeout.\n\nOptions:\n  --timeout SECONDS   give up after this long\n  --json              print {"name", "eventNr"} when the event comes\n\nExample:\n  dmsnap dm wait wrap-snap $(dmsnap dm info wrap-snap --json | jq ".devices[0].eventNr")',
  options: { timeout: { type: 'string' }, ...jsonOption },
  allowPositionals: true,
  async run(args, io) {
    const [name, eventText] = positionals(args, 1, 2, 'NAME');
    if (eventText !== undefined && !/^\d+$/.test(eventText)) throw new UsageError(`EVENT_NR must be a whole number; got "${eventText}"`);
    const timeoutText = args.values.timeout as string | undefined;
    if (timeoutText !== undefined && !/^\d+(\.\d+)?$/.test(timeoutText)) throw new UsageError(`--timeout must be a number of seconds; got "${timeoutText}"`);
    using dm = await openDm(io);
    let result: DeviceInfo;
    try {
      result = await dm.waitEvent(name as DeviceRef, eventText === undefined ? undefined : Number(eventText), {
        timeoutMs: timeoutText === undefined ? undefined : Math.round(Number(timeoutText) * 1000),
      });
    } catch (error) {
      if ((error as Error).name === 'TimeoutError') {
        writeLine(io.stderr, `dmsnap dm wait: no event on "${name}" within ${timeoutText} s`);
        return 1;
      }
      throw error;
    }
    if (args.values.json) json(io, { name: result.name, eventNr: result.eventNr });
    return 0;
  },
};

/** The `dmsnap dm …` commands, in the order `dmsnap --help` lists them. */
export const dmCommands: Command[] = [
  version,
  ls,
  targets,
  create,
  load,
  clear,
  suspend,
  resume,
  remove,
  rename,
  info,
  tableLikeCommand('table'),
  tableLikeCommand('status'),
  deps,
  message,
  wait,
];
