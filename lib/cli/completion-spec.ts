/**
 * What the shell completion offers, read from the command table: each command's words,
 * its options (from `options`, described by its help's option lines, their values named
 * by the placeholder there or in the usage) and its positional arguments (the usage's
 * words before the first option). A placeholder says what a value is: NAME an origin's
 * name (a device-mapper device's, for the dm commands), DEVICE or COW a block device, FILE,
 * IMG or DELTA a file, DIR a directory, SNAP a snapshot's name, "drop|keep" these words.
 */
import { type Command } from './command';
import { commandName, GLOBAL_OPTIONS_HELP } from './help';
import { type Definition, optionDefinitions, optionTerm } from './help-text';

/**
 * What a word can be: origin (an origin's name), snapshot (a snapshot's name), dm (any
 * device-mapper device's name), device (a block device), file, dir, command (a dmsnap
 * command), subcommand (one of the group the previous word names), `words=A,B` (one of
 * these), none (nothing to offer: a size, a new name).
 */
export type ValueKind = 'origin' | 'snapshot' | 'dm' | 'device' | 'file' | 'dir' | 'command' | 'subcommand' | 'none' | `words=${string}`;

export interface CompletionOption {
  /** --cow, and -q for --quiet. */
  flags: string[];
  /** What its value is; undefined for a switch. */
  value?: ValueKind[];
  /** The value's placeholder, as the help names it ("DEVICE"). */
  placeholder?: string;
  description: string;
  /** Whether it may be given more than once. */
  multiple: boolean;
}

export interface CompletionCommand {
  /** "snapshot", "dm table". */
  name: string;
  summary: string;
  options: CompletionOption[];
  /** The positional arguments in order: a placeholder and what it can be. */
  positionals: { placeholder: string; kinds: ValueKind[] }[];
  /** Whether the last positional repeats (NAME...). */
  repeatLast: boolean;
  /** Whether a command line to run follows "--" (backup). */
  runsCommand: boolean;
}

export interface CompletionSpec {
  /** The first words: the commands and the groups (dm), with a description each. */
  commands: { word: string; description: string }[];
  /** Each group's commands: dm → version, ls, …. */
  groups: { name: string; commands: { word: string; description: string }[] }[];
  /** -h/--help, -q/--quiet, --version. */
  global: CompletionOption[];
  perCommand: CompletionCommand[];
}

const PLACEHOLDER_KINDS: Record<string, ValueKind> = {
  NAME: 'origin',
  OLD: 'origin',
  DEVICE: 'device',
  COW: 'device',
  FILE: 'file',
  IMG: 'file',
  DELTA: 'file',
  DIR: 'dir',
  SNAP: 'snapshot',
  COMMAND: 'command',
};

/**
 * What `placeholder` ("NAME|DEVICE", "[NAME]", "FILE|-", "drop|keep") can be, for
 * `command`: a positional argument, or an option's value. A NAME is a new one (nothing
 * to offer) as an option's value and for `dm create`; so is a SNAP for the commands that
 * take a snapshot.
 */
function kindsOf(placeholder: string, command: Command, positional: boolean): ValueKind[] {
  const alternatives = placeholder.replace(/\.\.\.$/, '').replace(/^\[(.*)\]$/, '$1').split('|');
  if (alternatives.every((word) => /^[a-z][\w-]*$/.test(word))) return [`words=${alternatives.join(',')}`];
  const inGroup = command.name.length > 1;
  const kinds = alternatives.flatMap((word): ValueKind[] => {
    const kind = PLACEHOLDER_KINDS[word];
    if (kind === 'origin' && (!positional || command.name[1] === 'create')) return ['none'];
    if (kind === 'origin' && inGroup) return ['dm'];
    if (kind === 'snapshot' && 'cow' in command.options) return ['none'];
    return kind ? [kind] : [];
  });
  return kinds.length > 0 ? [...new Set(kinds)] : ['none'];
}

/** The usage's positional words, per line: up to the first option or "|" between forms. */
function positionalsOf(command: Command): Pick<CompletionCommand, 'positionals' | 'repeatLast'> {
  const positionals: CompletionCommand['positionals'] = [];
  let repeatLast = false;
  for (const line of command.usage.split('\n').filter((l) => !l.startsWith('('))) {
    const words = line.split(' ').filter((w) => w !== '');
    const end = words.findIndex((word) => /^\[?-|^\|$/.test(word));
    const own = end < 0 ? words : words.slice(0, end);
    own.forEach((word, i) => {
      positionals[i] ??= { placeholder: word.replace(/\.\.\.$|^\[|\]$/g, ''), kinds: kindsOf(word, command, true) };
      if (i === own.length - 1 && word.endsWith('...')) repeatLast = true;
    });
  }
  // `help COMMAND`: the command of a group follows the group's name.
  if (positionals.length === 1 && positionals[0].kinds.includes('command')) positionals.push({ placeholder: 'COMMAND', kinds: ['subcommand'] });
  return { positionals, repeatLast: repeatLast && positionals.length > 0 };
}

const MAX_DESCRIPTION = 90;

/** An option's text for a one-line description: up to the end of its first clause (outside parentheses), or cut at a word. */
function shortDescription(lines: string[]): string {
  const text = lines.join(' ');
  let depth = 0;
  for (let i = 0; i < Math.min(text.length, MAX_DESCRIPTION); i++) {
    depth += text[i] === '(' ? 1 : text[i] === ')' ? -1 : 0;
    if (depth === 0 && /[.;]/.test(text[i]) && text[i + 1] === ' ') return text.slice(0, i);
  }
  return text.length <= MAX_DESCRIPTION ? text : `${text.slice(0, text.lastIndexOf(' ', MAX_DESCRIPTION - 3))}...`;
}

/** `--name` as the help's option lines define it, else as the usage shows it. */
function optionOf(command: Command, name: string, definitions: Definition[]): CompletionOption {
  const config = command.options[name];
  const flags = [`--${name}`, ...(config.short ? [`-${config.short}`] : [])];
  const definition = definitions.find((d) => optionTerm(d.term).flags.includes(`--${name}`));
  const multiple = config.multiple === true;
  const description = shortDescription(definition?.text ?? []);
  if (config.type === 'boolean') return { flags, description, multiple };
  const inUsage = new RegExp(`--${name} ([^\\s\\]]+)`).exec(command.usage)?.[1]?.replace(/\.\.\.$/, '');
  const placeholder = (definition && optionTerm(definition.term).value) ?? inUsage ?? 'VALUE';
  return { flags, value: kindsOf(placeholder, command, false), placeholder, description, multiple };
}

function commandOf(command: Command): CompletionCommand {
  const definitions = optionDefinitions(command.help);
  return {
    name: commandName(command),
    summary: command.summary,
    options: Object.keys(command.options).map((name) => optionOf(command, name, definitions)),
    ...positionalsOf(command),
    runsCommand: /(^| )-- COMMAND/.test(command.usage),
  };
}

/** The global options, from their help lines. */
function globalOptions(): CompletionOption[] {
  return optionDefinitions(GLOBAL_OPTIONS_HELP).map((d) => ({ flags: optionTerm(d.term).flags, description: shortDescription(d.text), multiple: false }));
}

/** What the completion scripts offer for `commands`. */
export function completionSpec(commands: readonly Command[]): CompletionSpec {
  const groupNames = [...new Set(commands.filter((c) => c.name.length > 1).map((c) => c.name[0]))];
  const groups = groupNames.map((name) => ({
    name,
    commands: commands.filter((c) => c.name.length > 1 && c.name[0] === name).map((c) => ({ word: c.name[1], description: c.summary })),
  }));
  const firstWords = commands.flatMap((c) => {
    if (c.name.length === 1) return [{ word: c.name[0], description: c.summary }];
    const group = groups.find((g) => g.name === c.name[0])!;
    return group.commands[0].word === c.name[1] ? [{ word: group.name, description: `${group.name} COMMAND: ${group.commands.map((g) => g.word).join(', ')}` }] : [];
  });
  return { commands: firstWords, groups, global: globalOptions(), perCommand: commands.map(commandOf) };
}
