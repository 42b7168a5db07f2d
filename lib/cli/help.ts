/**
 * The help texts of the command line: the main help (`dmsnap --help`, `dmsnap help`), a
 * command's (`dmsnap CMD --help`, `dmsnap help CMD`), a group's (`dmsnap dm`), the usage
 * line printed with a usage error, and the `help` command itself.
 */
import { VERSION } from '../version';
import { type Command, ExitCode, UsageError, writeLine } from './command';
import { closest } from './parse-errors';

/** What dmsnap is, in the main help's first line and the manual page's NAME. */
export const TAGLINE = 'consistent block-level snapshots of live filesystems with device-mapper';

/** The exit codes (ExitCode), in the main help and the manual page's EXIT STATUS. */
export const EXIT_CODES_HELP = `Exit codes:
  0  success
  1  failure
  2  usage error
  3  snapshot invalidated (its COW device filled up)
  4  busy (lock held or device in use)
  (backup: COMMAND's status, 128+N if signal N ends it; 127 if it cannot run; 130/143 after SIGINT/SIGTERM)`;

/** The options every command takes (GLOBAL_OPTIONS), in the main help and the manual page's OPTIONS. */
export const GLOBAL_OPTIONS_HELP = `Global options (before or after the command):
  -h, --help     show help (of the command, when one is given)
  -q, --quiet    no informational messages on stderr
      --version  print the dmsnap version`;

export function commandName(command: Command): string {
  return command.name.join(' ');
}

/** "dmsnap NAME USAGE"; a usage of several lines gets "dmsnap NAME" on each (but on a note in parentheses). */
export function usageLine(command: Command): string {
  const lines = command.usage.split('\n');
  return lines
    .map((line, i) => {
      if (line.startsWith('(')) return `       ${line}`;
      const text = `dmsnap ${commandName(command)}${line ? ` ${line}` : ''}`;
      return i === 0 ? text : `       ${text}`;
    })
    .join('\n');
}

export function mainHelp(commands: readonly Command[]): string {
  const width = Math.max(...commands.map((c) => commandName(c).length));
  const list = commands.map((c) => `  ${commandName(c).padEnd(width)}  ${c.summary}`).join('\n');
  return `dmsnap ${VERSION}: ${TAGLINE}

Usage: dmsnap COMMAND [ARGS...]
       dmsnap COMMAND --help
       dmsnap help [COMMAND]

Commands:
${list}

${GLOBAL_OPTIONS_HELP}

Data goes to stdout, messages to stderr.

${EXIT_CODES_HELP}`;
}

export function commandHelp(command: Command): string {
  return `Usage: ${usageLine(command)}\n\n${command.summary}\n\n${command.help}`;
}

/** The commands of a group such as `dm`, one usage and summary each. */
export function groupHelp(group: readonly Command[]): string {
  return group.map((c) => `  ${usageLine(c)}\n      ${c.summary}`).join('\n');
}

/** The command named by the longest prefix of `words` that names one. */
export function findCommand(commands: readonly Command[], words: readonly string[]): { command?: Command; rest: string[] } {
  let best: Command | undefined;
  for (const command of commands) {
    const matches = command.name.every((word, i) => words[i] === word);
    if (matches && (!best || command.name.length > best.name.length)) best = command;
  }
  return { command: best, rest: best ? words.slice(best.name.length) : [...words] };
}

/** The commands of the group `word` names (`dm`); none when it names no group. */
export function groupOf(commands: readonly Command[], word: string | undefined): Command[] {
  return commands.filter((c) => c.name.length > 1 && c.name[0] === word);
}

/** "unknown command "WORDS"", with the closest command when one is near. */
export function unknownCommand(commands: readonly Command[], words: readonly string[]): string {
  const given = words.slice(0, 2).join(' ');
  const names = commands.map(commandName);
  const inGroup = groupOf(commands, words[0]).length > 0;
  const guess = closest(given, names) ?? (inGroup ? undefined : closest(words[0] ?? '', names));
  return `unknown command "${given}"${guess ? ` (did you mean "${guess}"?)` : ''}; run "dmsnap help" for the list`;
}

/** `dmsnap help [COMMAND]`: the main help, a command's, or a group's; exit 2 for an unknown COMMAND. */
export function helpCommand(commands: () => readonly Command[]): Command {
  return {
    name: ['help'],
    summary: 'show the help of dmsnap, or of COMMAND (as "dmsnap COMMAND --help" does)',
    usage: '[COMMAND]',
    help: 'COMMAND may be a group: "dmsnap help dm" lists its commands.\n\nExamples:\n  dmsnap help snapshot\n  dmsnap help dm table',
    options: {},
    allowPositionals: true,
    async run(args, io) {
      const words = args.positionals;
      if (words.length === 0) {
        writeLine(io.stdout, mainHelp(commands()));
        return ExitCode.ok;
      }
      const { command, rest } = findCommand(commands(), words);
      if (command && rest.length > 0) throw new UsageError(`unexpected argument "${rest[0]}" after the command "${commandName(command)}"`);
      if (command) {
        writeLine(io.stdout, commandHelp(command));
        return ExitCode.ok;
      }
      const group = groupOf(commands(), words[0]);
      if (words.length === 1 && group.length > 0) {
        writeLine(io.stdout, groupHelp(group));
        return ExitCode.ok;
      }
      throw new UsageError(unknownCommand(commands(), words));
    },
  };
}
