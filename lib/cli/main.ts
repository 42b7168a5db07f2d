#!/usr/bin/env node
/**
 * The dmsnap command line. Data goes to stdout, messages to stderr; exit codes are in
 * ExitCode (command.ts).
 */
import { DmsnapError, InvalidArgumentError } from '../errors';
import { VERSION } from '../version';
import { type CliContext, type Command, ExitCode, parseCommandArgs, UsageError, writeLine } from './command';
import { dmCommands } from './dm';
import { InterruptedError } from './signals';
import { signalExitCode } from './format';
import { lifecycleCommands } from './lifecycle';

const commands: Command[] = [...lifecycleCommands, ...dmCommands];

const EXIT_CODES_HELP = `Exit codes:
  0  success
  1  failure
  2  usage error
  3  snapshot invalidated (its COW device filled up)
  4  busy (lock held or device in use)
  (backup: COMMAND's own status; 127 if it cannot run; 130/143 after SIGINT/SIGTERM)`;

function commandName(command: Command): string {
  return command.name.join(' ');
}

function usageLine(command: Command): string {
  return `dmsnap ${commandName(command)}${command.usage ? ` ${command.usage}` : ''}`;
}

function mainHelp(): string {
  const width = Math.max(...commands.map((c) => commandName(c).length));
  const list = commands.map((c) => `  ${commandName(c).padEnd(width)}  ${c.summary}`).join('\n');
  return `dmsnap ${VERSION}: consistent block-level snapshots of live filesystems with device-mapper

Usage: dmsnap COMMAND [ARGS...]
       dmsnap COMMAND --help

Commands:
${list}

Global options:
  -h, --help     show help (also after a command)
  -q, --quiet    no informational messages on stderr
      --version  print the dmsnap version

Data goes to stdout, messages to stderr.

${EXIT_CODES_HELP}`;
}

function commandHelp(command: Command): string {
  return `Usage: ${usageLine(command)}\n\n${command.summary}\n\n${command.help}`;
}

/** Finds the command named by the longest matching prefix of argv. */
function findCommand(argv: string[]): { command?: Command; rest: string[] } {
  let best: Command | undefined;
  for (const command of commands) {
    const matches = command.name.every((word, i) => argv[i] === word);
    if (matches && (!best || command.name.length > best.name.length)) best = command;
  }
  return { command: best, rest: best ? argv.slice(best.name.length) : argv };
}

/** An error of Node's own system calls (fs, streams): errno code and syscall. */
function isSystemError(error: unknown): error is NodeJS.ErrnoException {
  const { code, syscall } = (error ?? {}) as NodeJS.ErrnoException;
  return typeof (error as Error)?.message === 'string' && typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) && typeof syscall === 'string';
}

/**
 * Runs one dmsnap command line (argv without node and the script) and resolves its exit
 * code (see ExitCode). Failures are reported on stderr, not thrown.
 */
export async function main(argv: string[], io: CliContext): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    writeLine(argv.length === 0 ? io.stderr : io.stdout, mainHelp());
    return argv.length === 0 ? ExitCode.usage : ExitCode.ok;
  }
  if (argv[0] === '--version') {
    writeLine(io.stdout, VERSION);
    return ExitCode.ok;
  }
  const { command, rest } = findCommand(argv);
  if (!command) {
    const group = commands.filter((c) => c.name.length > 1 && c.name[0] === argv[0]);
    if (group.length > 0 && (argv.length === 1 || argv[1] === '--help' || argv[1] === '-h')) {
      writeLine(io.stdout, group.map((c) => `  ${usageLine(c)}\n      ${c.summary}`).join('\n'));
      return argv.length === 1 ? ExitCode.usage : ExitCode.ok;
    }
    writeLine(io.stderr, `dmsnap: unknown command "${argv.slice(0, 2).join(' ')}"; run "dmsnap --help" for the list`);
    return ExitCode.usage;
  }
  try {
    const args = parseCommandArgs(command, rest);
    if (args.values.help) {
      writeLine(io.stdout, commandHelp(command));
      return ExitCode.ok;
    }
    return await command.run(args, { ...io, quiet: io.quiet || args.values.quiet === true });
  } catch (error) {
    if (error instanceof InterruptedError) {
      writeLine(io.stderr, `dmsnap ${commandName(command)}: ${error.message}`);
      return signalExitCode(error.signal);
    }
    if (error instanceof UsageError || error instanceof InvalidArgumentError) {
      writeLine(io.stderr, `dmsnap ${commandName(command)}: ${error.message}`);
      writeLine(io.stderr, `Usage: ${usageLine(command)}  (see --help)`);
      return ExitCode.usage;
    }
    if (error instanceof DmsnapError) {
      writeLine(io.stderr, `dmsnap ${commandName(command)}: ${error.message}`);
      return error.code === 'EBUSY' || error.code === 'ERR_DMSNAP_LOCKED' || error.code === 'ERR_DMSNAP_MERGING' ? ExitCode.busy : ExitCode.failure;
    }
    if (isSystemError(error)) {
      // A failed system call outside dmsnap's own checks (a full disk, an I/O error): its message, no stack.
      writeLine(io.stderr, `dmsnap ${commandName(command)}: ${error.message}`);
      return ExitCode.failure;
    }
    writeLine(io.stderr, `dmsnap ${commandName(command)}: unexpected error: ${(error as Error)?.stack ?? String(error)}`);
    return ExitCode.failure;
  }
}

if (require.main === module) {
  main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin }).then(
    (code) => {
      process.exitCode = code;
    },
  );
}
