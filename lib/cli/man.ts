/**
 * The manual page dmsnap(8), made from the same texts as the help: the tagline, the
 * global options, every command's usage, summary and help (its options as a tagged
 * list), and the exit codes. Only what the help has no place for is written here: the
 * description, the environment, the files, examples of a whole procedure, and the
 * pages to see also. scripts/gen-man.ts writes it to man/dmsnap.8; a unit test checks
 * that the committed page is what renderManPage gives.
 */
import { DEFAULT_HOOK_DIR } from '../system/hooks';
import { DEFAULT_LOCK_DIR, DEFAULT_LOCK_TIMEOUT_MS } from '../system/lock';
import type { Command } from './command';
import { commandName, EXIT_CODES_HELP, GLOBAL_OPTIONS_HELP, TAGLINE } from './help';
import { type Definition, parseHelp } from './help-text';
import { bold, definitions, escape, helpBlocks, literal, macro, markup, textLine } from './roff';
import { DEFAULT_CACHE_DIR } from './compile-cache';

const DESCRIPTION = [
  `dmsnap takes consistent, block-level snapshots of live Linux filesystems through the
kernel's device-mapper, without LVM and without running dmsetup.`,
  `A filesystem to back up live is mounted not on its block device but on a linear
device-mapper wrapper around it, /dev/mapper/NAME (with a duplicate mapping, NAME-real),
which "dmsnap prepare" makes before the filesystem is mounted. "dmsnap snapshot" then
freezes the filesystem for an instant and makes a read-only snapshot device of it, while
writes go on: the blocks they overwrite are copied first to a copy-on-write (COW) device
or file. "dmsnap status" shows how full the COW is and "dmsnap drop" removes the
snapshot; "dmsnap backup" and "dmsnap image" do the whole of it in one command.`,
  `The dm commands are low-level device-mapper commands named and shaped like dmsetup's;
"dmsnap dm table" and "dmsnap dm status" print byte for byte what dmsetup prints.`,
  `dmsnap works through ioctls on /dev/mapper/control and needs root. Data goes to stdout,
messages to stderr; every command has --help, with an example.`,
];

const ENVIRONMENT: Definition[] = [
  { term: 'DMSNAP_LOCK_DIR', text: [`the directory of the per-origin locks (default ${DEFAULT_LOCK_DIR}, created mode 0700); it must be root's alone`] },
  { term: 'DMSNAP_LOCK_TIMEOUT', text: [`how long a command waits for an origin's lock, in seconds (default ${DEFAULT_LOCK_TIMEOUT_MS / 1000})`] },
  { term: 'DMSNAP_HOOK_DIR', text: [`the hook directory when --hook-dir is not given (default ${DEFAULT_HOOK_DIR})`] },
  { term: 'DMSNAP_CACHE_DIR', text: [`the directory of the compile cache (default ${DEFAULT_CACHE_DIR}, created mode 0700); it must be the user's alone`] },
  { term: 'DMSNAP_COMPILE_CACHE', text: ['0: no compile cache, nothing read or written'] },
];

const SET_FOR_HOOKS: Definition[] = [
  { term: 'DMSNAP_HOOK_PHASE', text: ['pre-freeze or post-thaw'] },
  { term: 'DMSNAP_ORIGINS, DMSNAP_SNAPSHOTS', text: ['the names of the origins and of their snapshots, space-separated'] },
];

const SET_FOR_BACKUP: Definition[] = [
  { term: 'DMSNAP_MOUNT', text: ["the snapshot's mount directory (several NAMEs: the directory of their mounts)"] },
  { term: 'DMSNAP_DEVICE, DMSNAP_ORIGIN', text: ["one NAME: the snapshot's device and the origin's name"] },
  { term: 'DMSNAP_DEVICES, DMSNAP_ORIGINS', text: ['several NAMEs: the snapshots\' devices and the origins\' names, space-separated, in the order of the NAMEs'] },
];

const FILES: Definition[] = [
  { term: '/dev/mapper/control', text: ['the device-mapper control node, through which every command reaches the kernel'] },
  { term: '/dev/mapper/NAME, /dev/mapper/NAME-real', text: ['an origin: the wrapper the filesystem is mounted on, and the mapping of its block device'] },
  { term: '/dev/mapper/NAME-snap', text: ["a snapshot's device, by default (--snapshot-name names it)"] },
  { term: DEFAULT_HOOK_DIR, text: ['the hook directory: executables run around the freeze, when it exists'] },
  { term: DEFAULT_LOCK_DIR, text: ['the per-origin locks (DMSNAP_LOCK_DIR)'] },
  { term: `${DEFAULT_CACHE_DIR}/cli-COMMAND.bin`, text: ["the compile cache: V8's code for each command, written by root after the command ran, used by its next run (DMSNAP_CACHE_DIR); safe to delete"] },
  { term: '/etc/dmsnap/INSTANCE.conf', text: ['DMSNAP_PREPARE_ARGS for the unit dmsnap-prepare@INSTANCE.service (e.g. --attach COW)'] },
];

const EXAMPLES: [string, string[]][] = [
  ['Wrap a device before it is mounted, and mount the wrapper:', ['dmsnap prepare /dev/md2', 'mount /dev/mapper/md2 /srv']],
  ['Take a snapshot on a spare partition, look at it, and drop it:', ['dmsnap snapshot md2 --cow /dev/sdb6', 'dmsnap status md2', 'dmsnap drop md2']],
  ['Back up the filesystem as it was, in one command, with a COW file:', ['dmsnap backup md2 --cow-file /var/tmp/md2.cow -- tar -czf /backup/srv.tgz .']],
  ['Copy the whole device as it was:', ['dmsnap image md2 --cow /dev/sdb6 --output - | zstd > /backup/md2.img.zst']],
];

const SEE_ALSO = ['dmsetup', 'lvcreate', 'lsblk', 'fsfreeze', 'losetup'];

/** The manual page of dmsnap `version` with `commands`, in roff. */
export function renderManPage(commands: readonly Command[], version: string): string {
  const lines = [
    '.\\" dmsnap(8): made by scripts/gen-man.ts from the help texts of lib/cli/; run "npm run man" after changing them.',
    macro('TH', 'DMSNAP', '8', '', `dmsnap ${version}`, 'System Administration'),
    // Filled but not justified, and no hyphenation (groff's man macros restore it from the
    // register HY): options and names break only at spaces.
    '.ad l',
    '.nr HY 0',
    '.nh',
    ...section('NAME', [textLine(`dmsnap \\- ${escape(TAGLINE)}`)]),
    ...section('SYNOPSIS', synopsis()),
    ...section('DESCRIPTION', DESCRIPTION.flatMap(prose)),
    ...section('OPTIONS', globalOptions()),
    ...section('COMMANDS', commands.flatMap(commandSection)),
    ...section('EXIT STATUS', exitStatus()),
    ...section('ENVIRONMENT', environment()),
    ...section('FILES', definitions(FILES, bold)),
    ...section('EXAMPLES', EXAMPLES.flatMap(([text, example]) => [...prose(text), ...literal(example)])),
    ...section('SEE ALSO', [SEE_ALSO.map((page, i) => `.BR ${page} (8)${i < SEE_ALSO.length - 1 ? ',' : ''}`).join('\n')]),
  ];
  return `${lines.join('\n')}\n`;
}

function section(title: string, body: string[]): string[] {
  return [macro('SH', title), ...body];
}

/** A paragraph of prose: one roff text line per line of `text`. */
function prose(text: string): string[] {
  return ['.PP', ...text.split('\n').map((line) => textLine(escape(line)))];
}

/** A synopsis: `command` in bold, then its arguments, the lines after the first indented under them. */
function synopsisLine(command: string, args: string): string[] {
  return [macro('SY', command), ...(args === '' ? [] : [textLine(markup(args))]), '.YS'];
}

function synopsis(): string[] {
  return [...synopsisLine('dmsnap', '[-q] COMMAND [ARGS...]'), ...synopsisLine('dmsnap', 'COMMAND --help'), ...synopsisLine('dmsnap', 'help [COMMAND]'), ...synopsisLine('dmsnap', '--version')];
}

function globalOptions(): string[] {
  const [block] = parseHelp(GLOBAL_OPTIONS_HELP);
  if (block.kind !== 'definitions') throw new Error('GLOBAL_OPTIONS_HELP is not a list of options');
  return [...prose('Every command takes these options, before or after the command:'), ...definitions(block.entries)];
}

/** A command's subsection: its usage (a line per form; a note in parentheses as a paragraph), summary and help. */
function commandSection(command: Command): string[] {
  const usage = command.usage.split('\n').flatMap((line) => (line.startsWith('(') ? ['.PP', textLine(markup(line))] : synopsisLine(`dmsnap ${commandName(command)}`, line)));
  return [macro('SS', commandName(command)), ...usage, ...prose(command.summary), ...helpBlocks(parseHelp(command.help))];
}

function exitStatus(): string[] {
  const [block] = parseHelp(EXIT_CODES_HELP);
  if (block.kind !== 'definitions') throw new Error('EXIT_CODES_HELP is not a list of exit codes');
  return definitions(block.entries, bold);
}

function environment(): string[] {
  return [
    ...prose('dmsnap reads:'),
    ...definitions(ENVIRONMENT, bold),
    ...prose('Hooks run with, besides their environment:'),
    ...definitions(SET_FOR_HOOKS, bold),
    ...prose('The COMMAND of "dmsnap backup" runs with:'),
    ...definitions(SET_FOR_BACKUP, bold),
  ];
}
