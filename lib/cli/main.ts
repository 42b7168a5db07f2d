/**
 * The dmsnap command line. Data goes to stdout, messages to stderr; exit codes are in
 * ExitCode (command.ts).
 */
import { DmsnapError, InvalidArgumentError } from '../errors';
import { VERSION } from '../version';
import { type CliContext, type Command, ExitCode, GLOBAL_OPTIONS, parseCommandArgs, UsageError, writeLine } from './command';
import { completionCommand } from './completion';
import { dmCommands } from './dm';
import { commandHelp, commandName, findCommand, groupHelp, groupOf, helpCommand, mainHelp, unknownCommand, usageLine } from './help';
import { InterruptedError } from './signals';
import { signalExitCode } from './format';
import { lifecycleCommands } from './lifecycle';
import { closest } from './parse-errors';

/** Every command, in the order `dmsnap --help` lists them. */
export const commands: readonly Command[] = [...lifecycleCommands, ...dmCommands, helpCommand(() => commands), completionCommand(() => commands)];

const MAIN_USAGE = 'Usage: dmsnap [-q] COMMAND [ARGS...]  (see "dmsnap help")';

/** What the global options before the command asked for, and the words from the command on. */
interface Leading {
  quiet: boolean;
  help: boolean;
  version: boolean;
  words: string[];
  /** An option before the command that is not a global one. */
  unknown?: string;
}

/** Reads -q, -h, --version (also bundled, as -qh) before the command, up to the first other word or "--". */
function leadingOptions(argv: string[]): Leading {
  const lead: Leading = { quiet: false, help: false, version: false, words: [] };
  let i = 0;
  for (; i < argv.length && argv[i].startsWith('-') && argv[i] !== '-'; i++) {
    const word = argv[i];
    if (word === '--') {
      i++;
      break;
    }
    const flags = word.startsWith('--') ? [word.slice(2)] : [...word.slice(1)].map((c) => (c === 'q' ? 'quiet' : c === 'h' ? 'help' : `-${c}`));
    for (const flag of flags) {
      if (flag === 'quiet' || flag === 'help' || flag === 'version') lead[flag] = true;
      else lead.unknown ??= flag.startsWith('-') ? flag : `--${flag}`;
    }
  }
  lead.words = argv.slice(i);
  return lead;
}

/** Whether -h or --help is among `argv` before a "--". */
function helpAsked(argv: string[]): boolean {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).some((word) => word === '-h' || word === '--help');
}

/** An error of Node's own system calls (fs, streams): errno code and syscall. */
function isSystemError(error: unknown): error is NodeJS.ErrnoException {
  const { code, syscall } = (error ?? {}) as NodeJS.ErrnoException;
  return typeof (error as Error)?.message === 'string' && typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) && typeof syscall === 'string';
}

/** Reports what a command threw on stderr; resolves the exit code. */
function report(command: Command, error: unknown, io: CliContext): number {
  const prefix = `dmsnap ${commandName(command)}`;
  if (error instanceof InterruptedError) {
    writeLine(io.stderr, `${prefix}: ${error.message}`);
    return signalExitCode(error.signal);
  }
  if (error instanceof UsageError || error instanceof InvalidArgumentError) {
    writeLine(io.stderr, `${prefix}: ${error.message}`);
    writeLine(io.stderr, `Usage: ${usageLine(command)}  (see --help)`);
    return ExitCode.usage;
  }
  if (error instanceof DmsnapError) {
    writeLine(io.stderr, `${prefix}: ${error.message}`);
    return error.code === 'EBUSY' || error.code === 'ERR_DMSNAP_LOCKED' || error.code === 'ERR_DMSNAP_MERGING' ? ExitCode.busy : ExitCode.failure;
  }
  if (isSystemError(error)) {
    // A failed system call outside dmsnap's own checks (a full disk, an I/O error): its message, no stack.
    writeLine(io.stderr, `${prefix}: ${error.message}`);
    return ExitCode.failure;
  }
  writeLine(io.stderr, `${prefix}: unexpected error: ${(error as Error)?.stack ?? String(error)}`);
  return ExitCode.failure;
}

/** Runs `command` on its arguments: its help or the version when asked, else the command itself. */
async function runCommand(command: Command, rest: string[], io: CliContext): Promise<number> {
  try {
    if (helpAsked(rest)) {
      writeLine(io.stdout, commandHelp(command));
      return ExitCode.ok;
    }
    const args = parseCommandArgs(command, rest);
    if (args.values.help || args.values.version) {
      writeLine(io.stdout, args.values.help ? commandHelp(command) : VERSION);
      return ExitCode.ok;
    }
    return await command.run(args, { ...io, quiet: io.quiet || args.values.quiet === true });
  } catch (error) {
    return report(command, error, io);
  }
}

/** `dmsnap dm` alone lists the group on stderr (exit 2); with --help, on stdout. */
function runGroup(group: Command[], words: string[], help: boolean, io: CliContext): number {
  const asked = help || helpAsked(words.slice(1));
  const usage = `Usage: dmsnap ${words[0]} COMMAND [ARGS...]  (see "dmsnap help ${words[0]}")`;
  if (!asked && words.length > 1 && !words[1].startsWith('-')) {
    writeLine(io.stderr, `dmsnap: ${unknownCommand(commands, words)}`);
    writeLine(io.stderr, usage);
    return ExitCode.usage;
  }
  if (asked) {
    writeLine(io.stdout, groupHelp(group));
    return ExitCode.ok;
  }
  writeLine(io.stderr, `dmsnap ${words[0]}: missing the command; one of:`);
  writeLine(io.stderr, groupHelp(group));
  writeLine(io.stderr, usage);
  return ExitCode.usage;
}

/**
 * Runs one dmsnap command line (argv without node and the script) and resolves its exit
 * code (see ExitCode). Failures are reported on stderr, not thrown. The global options
 * (-q, -h, --version) may come before the command or among its arguments.
 */
export async function main(argv: string[], io: CliContext): Promise<number> {
  const lead = leadingOptions(argv);
  if (lead.unknown !== undefined) {
    const guess = lead.unknown.startsWith('--') ? closest(lead.unknown.slice(2), Object.keys(GLOBAL_OPTIONS)) : undefined;
    writeLine(io.stderr, `dmsnap: unknown option ${lead.unknown} before the command${guess ? ` (did you mean --${guess}?)` : ''}`);
    writeLine(io.stderr, MAIN_USAGE);
    return ExitCode.usage;
  }
  if (lead.version) {
    writeLine(io.stdout, VERSION);
    return ExitCode.ok;
  }
  const context = { ...io, quiet: io.quiet || lead.quiet };
  if (lead.words.length === 0) {
    writeLine(lead.help ? io.stdout : io.stderr, mainHelp(commands));
    return lead.help ? ExitCode.ok : ExitCode.usage;
  }
  const { command, rest } = findCommand(commands, lead.words);
  if (!command) {
    const group = groupOf(commands, lead.words[0]);
    if (group.length > 0) return runGroup(group, lead.words, lead.help, context);
    writeLine(io.stderr, `dmsnap: ${unknownCommand(commands, lead.words)}`);
    writeLine(io.stderr, MAIN_USAGE);
    return ExitCode.usage;
  }
  return runCommand(command, lead.help ? ['--help', ...rest] : rest, context);
}

if (require.main === module) {
  main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, get stdin() { return process.stdin; } }).then(
    (code) => {
      process.exitCode = code;
    },
  );
}
