/**
 * `dmsnap dm version`, `ls`, `targets` and `info`: what the driver and its devices are.
 */
import { readFileSync } from 'node:fs';
import type { DeviceInfo } from '../dm/device-mapper';
import { VERSION } from '../version';
import { type CliContext, type Command, ExitCode, jsonOption, openDm, writeLine } from './command';
import { NO_DEVICES, perDeviceCommand, printOutput, reportCommand } from './dm-common';

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

/** The driver's version, or why it cannot be read (no driver, no permission): `dm version` needs neither. */
async function driverVersion(io: CliContext): Promise<{ text: string } | { error: Error }> {
  try {
    using dm = await openDm(io);
    return await dm.version();
  } catch (error) {
    return { error: error as Error };
  }
}

export const versionCommand: Command = {
  name: ['dm', 'version'],
  summary: 'print the dmsnap and device-mapper driver versions',
  usage: '[--json]',
  help: `Prints dmsnap's version, and the driver's as dmsetup does ("Driver version:"). Without a
readable driver (not loaded, or not root) it says why on stderr, prints dmsnap's
version alone and still exits 0.

Options:
  --json   print {"dmsnap": "…", "driver": "…" or null}

Example:
  dmsnap dm version`,
  options: jsonOption,
  async run(args, io) {
    const driver = await driverVersion(io);
    const text = 'text' in driver ? driver.text : null;
    if (!('text' in driver) && !io.quiet) writeLine(io.stderr, `dmsnap dm version: cannot read the driver version: ${driver.error.message}`);
    printOutput(io, args, () => ({ dmsnap: VERSION, driver: text }), () => [`dmsnap version:    ${VERSION}`, ...(text === null ? [] : [`Driver version:    ${text}`])]);
    return ExitCode.ok;
  },
};

export const lsCommand = reportCommand(
  {
    name: ['dm', 'ls'],
    summary: 'list device-mapper devices (like dmsetup ls)',
    usage: '[--json]',
    help: 'Prints NAME<TAB>(MAJOR:MINOR) per device, sorted by name.\n\nOptions:\n  --json   {"devices": [{"name", "major", "minor", "uuid", "eventNr"}]}\n\nExample:\n  dmsnap dm ls --json',
  },
  (dm) => dm.list(),
  {
    json: (devices) => ({ devices: devices.map((d) => ({ name: d.name, major: d.major, minor: d.minor, uuid: d.uuid ?? null, eventNr: d.eventNr ?? null })) }),
    lines: (devices) => (devices.length === 0 ? [NO_DEVICES] : devices.map((d) => `${d.name}\t(${d.major}:${d.minor})`)),
  },
);

export const targetsCommand = reportCommand(
  {
    name: ['dm', 'targets'],
    summary: 'list the target types the kernel has loaded (like dmsetup targets)',
    usage: '[--json]',
    help: 'Options:\n  --json   {"targets": [{"name", "version"}]}\n\nExample:\n  dmsnap dm targets',
  },
  (dm) => dm.targets(),
  {
    json: (list) => ({ targets: list.map((t) => ({ name: t.name, version: t.text })) }),
    lines: (list) => list.map((t) => `${t.name.padEnd(16)} v${t.text}`),
  },
);

export const infoCommand = perDeviceCommand(
  {
    name: ['dm', 'info'],
    summary: 'show the state of a device, or of all devices (like dmsetup info)',
    usage: '[NAME] [--json]',
    help: 'Options:\n  --json   {"devices": [{"name", "uuid", "major", "minor", "openCount", "eventNr", "targetCount", "suspended", "readOnly", "liveTable", "inactiveTable", "deferredRemove", "readAheadSectors"}]}\n\nExample:\n  dmsnap dm info wrap',
    options: jsonOption,
  },
  (dm, name) => dm.info(name),
  {
    json: (results) => ({ devices: results.map(({ data: d }) => ({ ...d, readAheadSectors: readAheadSectors(d) ?? null })) }),
    lines: (results) => results.map(({ data }) => formatInfo(data)),
  },
);
