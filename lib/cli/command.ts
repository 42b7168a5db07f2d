/**
 * What every CLI command shares: how it is described, its arguments, how it writes, the
 * device-mapper client it uses, and the exit codes.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { DeviceMapper } from '../dm/device-mapper';
import { checkDeviceName } from '../dm/names';
import type { NativeBinding } from '../native';
import { parseErrorMessage } from './parse-errors';

/** Exit codes, documented in `dmsnap --help` and the README. */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  snapshotInvalid: 3,
  busy: 4,
} as const;

/** A mistake in the command line: printed with the command's usage, exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Where a command reads and writes, and (for tests) which native binding it uses. */
export interface CliContext {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  stdin: NodeJS.ReadableStream;
  /** The native binding to use; tests inject a fake one. */
  binding?: NativeBinding;
  /** -q: no informational messages on stderr. */
  quiet?: boolean;
  /** Where per-origin locks live (default /run/lock/dmsnap, or $DMSNAP_LOCK_DIR). */
  lockDir?: string;
  /** Where device nodes live (default /dev/mapper); tests point it at a folder of their own. */
  devDir?: string;
  /** Whether udev makes the nodes (default: detected); tests set it. */
  udev?: boolean;
}

/** One CLI command: its name, its help texts, its options and what it runs. */
export interface Command {
  /** The words that name it, e.g. ['dm', 'version']. */
  name: string[];
  /** One line, listed by `dmsnap --help` and printed under the usage. */
  summary: string;
  /** Usage lines after the command name, e.g. 'NAME [--json]'. */
  usage: string;
  /** Longer help: options and an example. */
  help: string;
  /** Its options, for node:util parseArgs; --help (-h) and --quiet (-q) are added to every command. */
  options: NonNullable<ParseArgsConfig['options']>;
  /** Whether it takes positional arguments; default false. */
  allowPositionals?: boolean;
  /** Runs the command; resolves its exit code (see ExitCode). */
  run(args: ParsedArgs, io: CliContext): Promise<number>;
}

/** A command line as parseArgs returns it: option values by long name, and the positional arguments. */
export interface ParsedArgs {
  values: Record<string, string | boolean | string[] | boolean[] | undefined>;
  positionals: string[];
  /** How many positionals came before "--" (undefined without one): backup's NAMEs before its COMMAND. */
  beforeTerminator?: number;
}

/** The options every command takes besides its own: -h/--help, -q/--quiet and --version. */
export const GLOBAL_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  quiet: { type: 'boolean', short: 'q' },
  version: { type: 'boolean' },
} as const;

/** Parses a command's arguments with Node's own parser; mistakes become UsageErrors in dmsnap's words. */
export function parseCommandArgs(command: Command, argv: string[]): ParsedArgs {
  const options = { ...command.options, ...GLOBAL_OPTIONS };
  try {
    const { values, positionals, tokens } = parseArgs({
      args: argv,
      options,
      allowPositionals: command.allowPositionals ?? false,
      strict: true,
      tokens: true,
    });
    const terminator = tokens.findIndex((token) => token.kind === 'option-terminator');
    if (terminator < 0) return { values, positionals };
    return { values, positionals, beforeTerminator: tokens.slice(0, terminator).filter((token) => token.kind === 'positional').length };
  } catch (error) {
    throw new UsageError(parseErrorMessage(error, argv, options));
  }
}

/** Writes `text` and a newline. */
export function writeLine(stream: NodeJS.WritableStream, text = ''): void {
  stream.write(`${text}\n`);
}

/** The positional arguments, at least `min` and at most `max`; `names` says what is missing. */
export function positionals(args: ParsedArgs, min: number, max: number, names: string): string[] {
  if (args.positionals.length < min) throw new UsageError(`missing ${names}`);
  if (args.positionals.length > max) throw new UsageError(`unexpected argument "${args.positionals[max]}"`);
  return args.positionals;
}

/** The one positional argument, named `what` in the message when it is missing. */
export function one(args: ParsedArgs, what: string): string {
  return positionals(args, 1, 1, what)[0];
}

/** `name` checked as a device-mapper name (1 to 127 bytes, no '/', …) before anything is touched; `what` names it in the message. */
export function checkName(name: string, what = 'NAME'): string {
  checkDeviceName(name, what);
  return name;
}

/** The one positional argument, a device-mapper name, checked. */
export function oneName(args: ParsedArgs, what = 'NAME'): string {
  return checkName(one(args, what), what);
}

/** A device-mapper client on the command's binding; close it with `using`. */
export async function openDm(io: CliContext): Promise<DeviceMapper> {
  return DeviceMapper.open({ binding: io.binding, ...(io.devDir === undefined ? {} : { devDir: io.devDir }), ...(io.udev === undefined ? {} : { udev: io.udev }) });
}

/** The --json option of the commands that can print JSON. */
export const jsonOption = { json: { type: 'boolean' as const } };

/**
 * Runs `fn` with the one positional argument (`what` names it when missing) and a
 * device-mapper client, closed afterwards. The argument is checked as a device-mapper
 * name unless `isName` is false (a device path), before the client is opened.
 */
export async function withOne<T>(args: ParsedArgs, io: CliContext, what: string, fn: (name: string, dm: DeviceMapper) => Promise<T>, isName = true): Promise<T> {
  const name = isName ? oneName(args, what) : one(args, what);
  using dm = await openDm(io);
  return await fn(name, dm);
}
