/**
 * What the `dmsnap dm …` commands share: the table they read, and the two shapes of
 * command that print what they read (as JSON with --json, else as lines): a report on the
 * driver or all of its devices, and a report per device, of one device or of every one.
 */
import type { DeviceMapper } from '../dm/device-mapper';
import { type CliContext, type Command, jsonOption, openDm, type ParsedArgs, positionals, UsageError, withOne, writeLine } from './command';
import { writeJson } from './format';

/** What dmsetup prints when there is no device to report on. */
export const NO_DEVICES = 'No devices found';

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
      using dm = await openDm(io);
      const names = name !== undefined ? [name] : (await dm.list()).map((d) => d.name);
      const results: DeviceResult<T>[] = [];
      for (const n of names) results.push({ name: n, data: await read(dm, n, args) });
      printOutput(io, args, () => print.json(results), () => (results.length > 0 ? print.lines(results, name !== undefined) : [NO_DEVICES]));
      return 0;
    },
  };
}
