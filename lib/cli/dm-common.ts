/**
 * What the `dmsnap dm …` commands share: the table they read, running over one device or
 * all of them, and how a list of devices is printed.
 */
import type { DeviceMapper } from '../dm/device-mapper';
import { type CliContext, type ParsedArgs, UsageError, writeLine } from './command';
import { writeJson } from './format';

/** Table text from --table options (each a line) or, as dmsetup does, from stdin. */
export async function readTable(args: ParsedArgs, io: CliContext): Promise<string> {
  const lines = args.values.table as string[] | undefined;
  if (lines && lines.length > 0) return lines.join('\n');
  const chunks: Buffer[] = [];
  for await (const chunk of io.stdin) chunks.push(Buffer.from(chunk as Buffer));
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw new UsageError('no table given: use --table LINE or pipe the table on stdin');
  return text;
}

/** Runs `each` for the named device, or for every device (dmsetup's behaviour without a name); false if there was none. */
export async function forEachDevice(dm: DeviceMapper, name: string | undefined, each: (name: string) => Promise<void>): Promise<boolean> {
  if (name !== undefined) {
    await each(name);
    return true;
  }
  const devices = await dm.list();
  for (const device of devices) await each(device.name);
  return devices.length > 0;
}

/**
 * Prints what a command found on devices: `json()` with --json, else "No devices found"
 * (as dmsetup says it) when there were none, else `lines()`.
 */
export function printDevices(io: CliContext, args: ParsedArgs, found: boolean, json: () => unknown, lines: () => string[]): void {
  if (args.values.json) {
    writeJson(io, json());
  } else if (!found) {
    writeLine(io.stdout, 'No devices found');
  } else {
    for (const line of lines()) writeLine(io.stdout, line);
  }
}
