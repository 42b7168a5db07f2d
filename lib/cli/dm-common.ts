/**
 * What the `dmsnap dm …` commands share: the table they read, and the two shapes of
 * command that print what they read (as JSON with --json, else as lines): a report on the
 * driver or all of its devices, and a report per device, of one device or of every one.
 */
import { checkedTable } from '../dm/convert';
import { parseTable } from '../dm/table';
import { DmError } from '../errors';
import { appendHint } from '../explain';
import type { DeviceMapper } from '../dm/device-mapper';
import { checkName, type CliContext, type Command, jsonOption, openDm, type ParsedArgs, positionals, UsageError, withOne, writeLine } from './command';
import { writeJson } from './format';

/** What dmsetup prints when there is no device to report on. */
export const NO_DEVICES = 'No devices found';

/** Table text from --table options (each a line) or, as dmsetup does, from stdin; checked as the kernel will read it. */
export async function readTable(args: ParsedArgs, io: CliContext): Promise<string> {
  const lines = args.values.table as string[] | undefined;
  let text: string;
  if (lines && lines.length > 0) {
    text = lines.join('\n');
  } else {
    const chunks: Buffer[] = [];
    for await (const chunk of io.stdin) chunks.push(Buffer.from(chunk as Buffer));
    text = Buffer.concat(chunks).toString('utf8');
    if (text.trim() === '') throw new UsageError('no table given: use --table LINE or pipe the table on stdin');
  }
  checkedTable(text);
  return text;
}

/**
 * Runs `op`, which loads `table`; when the kernel rejects it (EINVAL), names the target
 * types the kernel has not loaded, and the modprobe that would load them.
 */
export async function withTargetHint<T>(dm: DeviceMapper, table: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (error) {
    if (error instanceof DmError && error.code === 'EINVAL' && error.ioctl === 'DM_TABLE_LOAD') {
      const loaded = new Set((await dm.targets().catch(() => [])).map((t) => t.name));
      const missing = [...new Set(parseTable(table).map((line) => line.type))].filter((type) => !loaded.has(type));
      if (loaded.size > 0 && missing.length > 0) {
        const modules = missing.map((type) => `dm-${type}`).join(' ');
        appendHint(error, `the kernel has no ${missing.map((type) => `"${type}"`).join(', ')} target loaded: run "modprobe -a ${modules}" as root, if there is such a module`);
      }
    }
    throw error;
  }
}

/** Prints `json()` with --json, else `lines()`. */
export function printOutput(io: CliContext, args: ParsedArgs, json: () => unknown, lines: () => string[]): void {
  if (args.values.json) {
    writeJson(io, json());
  } else {
    for (const line of lines()) writeLine(io.stdout, line);
  }
}

/** A command's name and help texts. */
type CommandText = Pick<Command, 'name' | 'summary' | 'usage' | 'help'>;

/** How a report prints what it read. */
interface Printer<T> {
  json(data: T): unknown;
  lines(data: T): string[];
}

/** A command without arguments that reads `read(dm)` and prints it. */
export function reportCommand<T>(text: CommandText, read: (dm: DeviceMapper) => Promise<T>, print: Printer<T>): Command {
  return {
    ...text,
    options: jsonOption,
    async run(args, io) {
      using dm = await openDm(io);
      const data = await read(dm);
      printOutput(io, args, () => print.json(data), () => print.lines(data));
      return 0;
    },
  };
}

/** A command on one NAME that does `act` to it and prints nothing. */
export function deviceActionCommand(
  text: CommandText & Pick<Command, 'options'>,
  act: (dm: DeviceMapper, name: string, args: ParsedArgs) => Promise<unknown>,
): Command {
  return {
    ...text,
    allowPositionals: true,
    run: (args, io) =>
      withOne(args, io, 'NAME', async (name, dm) => {
        await act(dm, name, args);
        return 0;
      }),
  };
}

/** What a per-device report read from one device. */
export interface DeviceResult<T> {
  name: string;
  data: T;
}

/**
 * A command on [NAME]: `read` runs for the named device or, as dmsetup does without a
 * name, for every device; `lines` is told whether a NAME was given. Prints NO_DEVICES
 * when there is none.
 */
export function perDeviceCommand<T>(
  text: CommandText & Pick<Command, 'options'>,
  read: (dm: DeviceMapper, name: string, args: ParsedArgs) => Promise<T>,
  print: { json(results: DeviceResult<T>[]): unknown; lines(results: DeviceResult<T>[], named: boolean): string[] },
): Command {
  return {
    ...text,
    allowPositionals: true,
    async run(args, io) {
      const [name] = positionals(args, 0, 1, 'NAME');
      if (name !== undefined) checkName(name);
      using dm = await openDm(io);
      const names = name !== undefined ? [name] : (await dm.list()).map((d) => d.name);
      const results: DeviceResult<T>[] = [];
      for (const n of names) results.push({ name: n, data: await read(dm, n, args) });
      printOutput(io, args, () => print.json(results), () => (results.length > 0 ? print.lines(results, name !== undefined) : [NO_DEVICES]));
      return 0;
    },
  };
}
