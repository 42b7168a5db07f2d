/**
 * The bash completion script of `dmsnap completion bash`: the command table's words as
 * case statements, and a fixed part that walks the command line. Origin, snapshot and
 * device-mapper names come from /sys/block/dm-N/dm (name and uuid: readable without
 * root, and without running dmsnap), block devices from lsblk.
 */
import type { CompletionCommand, CompletionSpec, ValueKind } from './completion-spec';

/** The helpers: names, devices, files, and a word list filtered by the word being completed. */
const HELPERS = `# Where the kernel lists the device-mapper devices (name, uuid): readable without root.
_dmsnap_sys=\${_dmsnap_sys:-/sys}

# The names of the device-mapper devices whose uuid matches the pattern $1.
_dmsnap_dm_names() {
  local dir name uuid
  for dir in "$_dmsnap_sys"/block/dm-*/dm; do
    [[ -r $dir/name ]] || continue
    name= uuid=
    read -r name 2>/dev/null <"$dir/name"
    read -r uuid 2>/dev/null <"$dir/uuid"
    [[ -n $name && $uuid == $1 ]] && printf '%s\\n' "$name"
  done
}

# The block devices: lsblk's, else the kernel's list.
_dmsnap_block_devices() {
  local dev
  if type -P lsblk >/dev/null; then
    lsblk -pnro NAME 2>/dev/null | sort -u
  else
    for dev in "$_dmsnap_sys"/class/block/*; do
      [[ -e $dev ]] && printf '/dev/%s\\n' "\${dev##*/}"
    done
  fi
}

# Adds to COMPREPLY the words of $1 that begin with the word being completed.
_dmsnap_add() {
  local word
  local -a words
  IFS=$' \\t\\n' read -r -d '' -a words <<<"$1"
  for word in "\${words[@]}"; do
    [[ $word == "$_dmsnap_cur"* ]] && COMPREPLY+=("$word")
  done
  return 0
}

# Adds files (-f) or directories (-d).
_dmsnap_files() {
  local word
  compopt -o filenames 2>/dev/null
  while IFS= read -r word; do
    COMPREPLY+=("$word")
  done < <(compgen "$1" -- "$_dmsnap_cur")
}

# Adds what each kind in $1 offers (see _dmsnap_option_value).
_dmsnap_values() {
  local kind words
  for kind in $1; do
    case $kind in
      origin) _dmsnap_add "$(_dmsnap_dm_names 'DMSNAP-*-origin')" ;;
      snapshot) _dmsnap_add "$(_dmsnap_dm_names 'DMSNAP-*-snap-*')" ;;
      dm) _dmsnap_add "$(_dmsnap_dm_names '*')" ;;
      device)
        _dmsnap_add "$(_dmsnap_block_devices)"
        (( \${#COMPREPLY[@]} )) || _dmsnap_files -f
        ;;
      file) _dmsnap_files -f ;;
      dir) _dmsnap_files -d ;;
      command) _dmsnap_add "$_dmsnap_commands" ;;
      subcommand) _dmsnap_add "$(_dmsnap_subcommands "$_dmsnap_prev")" ;;
      words=*)
        words=\${kind#words=}
        _dmsnap_add "\${words//,/ }"
        ;;
    esac
  done
}

# A command line after "--" (backup's COMMAND); $1 is where it starts in COMP_WORDS.
_dmsnap_command_line() {
  local word
  if declare -F _command_offset >/dev/null; then
    _command_offset "$1"
  elif (( COMP_CWORD == $1 )); then
    while IFS= read -r word; do
      COMPREPLY+=("$word")
    done < <(compgen -c -- "$_dmsnap_cur")
  else
    _dmsnap_files -f
  fi
}
`;

/** The walk over the command line: the command (after global options), then its options' values and its positionals. */
const MAIN = `_dmsnap() {
  local _dmsnap_cur=\${COMP_WORDS[COMP_CWORD]} _dmsnap_prev= cmd= sub word kinds i=1 n=0 ended=0
  COMPREPLY=()
  (( COMP_CWORD > 0 )) && _dmsnap_prev=\${COMP_WORDS[COMP_CWORD-1]}
  # Bash splits --option=VALUE at "=": nothing to offer for the "=" itself.
  [[ $_dmsnap_cur == = ]] && return 0
  while (( i < COMP_CWORD )) && [[ \${COMP_WORDS[i]} == -* ]]; do
    (( ++i ))
  done
  if (( i == COMP_CWORD )); then
    if [[ $_dmsnap_cur == -* ]]; then _dmsnap_add "$_dmsnap_global"; else _dmsnap_add "$_dmsnap_commands"; fi
    return 0
  fi
  cmd=\${COMP_WORDS[i++]}
  sub=$(_dmsnap_subcommands "$cmd")
  if [[ -n $sub ]]; then
    if (( i == COMP_CWORD )); then _dmsnap_add "$sub"; return 0; fi
    cmd="$cmd \${COMP_WORDS[i++]}"
  fi
  # The words before this one: options and their values, positionals, "--".
  for (( ; i < COMP_CWORD; i++ )); do
    word=\${COMP_WORDS[i]}
    if (( !ended )) && [[ $word == -- ]]; then
      if [[ " $_dmsnap_run_commands " == *" $cmd "* ]]; then
        _dmsnap_command_line $(( i + 1 ))
        return 0
      fi
      ended=1
    elif (( !ended )) && [[ $word == -?* ]]; then
      kinds=$(_dmsnap_option_value "$cmd" "$word")
      [[ -n $kinds ]] || continue
      (( i + 1 < COMP_CWORD )) && [[ \${COMP_WORDS[i+1]} == = ]] && (( ++i ))
      if (( i + 1 == COMP_CWORD )); then
        _dmsnap_values "$kinds"
        return 0
      fi
      (( ++i ))
    else
      (( ++n ))
    fi
  done
  if (( !ended )) && [[ $_dmsnap_cur == -* ]]; then
    _dmsnap_add "$(_dmsnap_options "$cmd") $_dmsnap_global"
    return 0
  fi
  kinds=$(_dmsnap_positional "$cmd" "$n")
  if [[ -n $kinds ]]; then
    _dmsnap_values "$kinds"
  elif (( !ended )); then
    _dmsnap_add "$(_dmsnap_options "$cmd") $_dmsnap_global"
  fi
  return 0
}

complete -F _dmsnap dmsnap`;

/** `text` in single quotes for bash. */
function quote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** A function of a `case` on its arguments ("$1" or "$1 $2"): one branch per [patterns, body]. */
function caseFunction(name: string, comment: string, subject: string, branches: [string[], string][]): string {
  const lines = branches.map(([patterns, body]) => `    ${patterns.join('|')}) ${body} ;;`);
  return [`# ${comment}`, `${name}() {`, `  case ${subject} in`, ...lines, '  esac', '}'].join('\n');
}

/** Branches by what they print: one per distinct output, its patterns in the order first seen. */
function grouped(entries: [string, string][]): [string[], string][] {
  const byBody = new Map<string, string[]>();
  for (const [pattern, body] of entries) byBody.set(body, [...(byBody.get(body) ?? []), pattern]);
  return [...byBody].map(([body, patterns]) => [patterns, body]);
}

function kindsText(kinds: ValueKind[]): string {
  return `echo ${quote(kinds.join(' '))}`;
}

/** `case $2` over a command's positionals: the last one also for any later position when it repeats. */
function positionalBranch(command: CompletionCommand): string {
  const last = command.positionals.length - 1;
  const branches = command.positionals.map((p, i) => `${i === last && command.repeatLast ? '*' : i}) ${kindsText(p.kinds)} ;;`);
  return `case $2 in ${branches.join(' ')} esac`;
}

function tables(spec: CompletionSpec): string {
  const optionValues = spec.perCommand.flatMap((c) =>
    c.options.flatMap((o) => (o.value ? o.flags.map((flag): [string, string] => [quote(`${c.name} ${flag}`), kindsText(o.value!)]) : [])),
  );
  return [
    `_dmsnap_commands=${quote(spec.commands.map((c) => c.word).join(' '))}`,
    `_dmsnap_global=${quote(spec.global.flatMap((o) => o.flags).join(' '))}`,
    `_dmsnap_run_commands=${quote(spec.perCommand.filter((c) => c.runsCommand).map((c) => c.name).join(' '))}`,
    '',
    caseFunction('_dmsnap_subcommands', 'The commands of the group $1.', '$1', spec.groups.map((g) => [[quote(g.name)], `echo ${quote(g.commands.map((c) => c.word).join(' '))}`])),
    '',
    caseFunction('_dmsnap_options', 'The options of the command $1.', '$1', spec.perCommand.filter((c) => c.options.length > 0).map((c) => [[quote(c.name)], `echo ${quote(c.options.flatMap((o) => o.flags).join(' '))}`])),
    '',
    caseFunction(
      '_dmsnap_option_value',
      'What the value of the option $2 of the command $1 is (nothing for a switch): origin, snapshot, dm, device, file, dir, command, subcommand, words=A,B, or none.',
      '"$1 $2"',
      grouped(optionValues),
    ),
    '',
    caseFunction('_dmsnap_positional', 'What the positional argument $2 (from 0) of the command $1 is.', '$1', spec.perCommand.filter((c) => c.positionals.length > 0).map((c) => [[quote(c.name)], positionalBranch(c)])),
  ].join('\n');
}

/** The bash completion script for `spec`, of dmsnap `version`. */
export function bashCompletion(spec: CompletionSpec, version: string): string {
  return `# bash completion for dmsnap ${version}, made by "dmsnap completion bash".
# Install: dmsnap completion bash > /etc/bash_completion.d/dmsnap
# or, for one shell: source <(dmsnap completion bash)

${tables(spec)}

${HELPERS}
${MAIN}
`;
}
