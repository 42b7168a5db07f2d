/**
 * `dmsnap dm version`, `ls`, `targets` and `info`: what the driver and its devices are.
 */
import { readFileSync } from 'node:fs';
import type { DeviceInfo } from '../dm/device-mapper';
import { VERSION } from '../version';
import { type Command, jsonOption, openDm, positionals, writeLine } from './command';
import { forEachDevice, printDevices } from './dm-common';
import { writeJson } from './format';

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

export const versionCommand: Command = {
  name: ['dm', 'version'],
  summary: 'print the dmsnap and device-mapper driver versions',
  usage: '[--json]',
  help: 'Options:\n  --json   print {"dmsnap": "…", "driver": "…"}\n\nExample:\n  dmsnap dm version',
  options: jsonOption,
  async run(args, io) {
    using dm = await openDm(io);
    const driver = await dm.version();
    if (args.values.json) {
      writeJson(io, { dmsnap: VERSION, driver: driver.text });
    } else {
      writeLine(io.stdout, `dmsnap version:    ${VERSION}`);
      writeLine(io.stdout, `Driver version:    ${driver.text}`);
    }
    return 0;
  },
};

export const lsCommand: Command = {
  name: ['dm', 'ls'],
  summary: 'list device-mapper devices (like dmsetup ls)',
  usage: '[--json]',
  help: 'Prints NAME<TAB>(MAJOR:MINOR) per device, sorted by name.\n\nOptions:\n  --json   {"devices": [{"name", "major", "minor", "uuid", "eventNr"}]}\n\nExample:\n  dmsnap dm ls --json',
  options: jsonOption,
  async run(args, io) {
    using dm = await openDm(io);
    const devices = await dm.list();
    printDevices(
      io,
      args,
      devices.length > 0,
      () => ({ devices: devices.map((d) => ({ name: d.name, major: d.major, minor: d.minor, uuid: d.uuid ?? null, eventNr: d.eventNr ?? null })) }),
      () => devices.map((d) => `${d.name}\t(${d.major}:${d.minor})`),
    );
    return 0;
  },
};

export const targetsCommand: Command = {
  name: ['dm', 'targets'],
  summary: 'list the target types the kernel has loaded (like dmsetup targets)',
  usage: '[--json]',
  help: 'Options:\n  --json   {"targets": [{"name", "version"}]}\n\nExample:\n  dmsnap dm targets',
  options: jsonOption,
  async run(args, io) {
    using dm = await openDm(io);
    const list = await dm.targets();
    if (args.values.json) {
      writeJson(io, { targets: list.map((t) => ({ name: t.name, version: t.text })) });
    } else {
      for (const t of list) writeLine(io.stdout, `${t.name.padEnd(16)} v${t.text}`);
    }
    return 0;
  },
};

export const infoCommand: Command = {
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
    printDevices(
      io,
      args,
      any,
      () => ({ devices: all.map((d) => ({ ...d, readAheadSectors: readAheadSectors(d) ?? null })) }),
      () => all.map(formatInfo),
    );
    return 0;
  },
};
