/**
 * The zsh completion script of `dmsnap completion zsh`: a #compdef function on
 * _arguments, one spec list per command from the command table, with the descriptions
 * of the help. It works from a directory in $fpath (autoloaded by compinit) and sourced
 * after compinit. Names and devices come from where the bash script reads them.
 */
import type { CompletionCommand, CompletionOption, CompletionSpec, ValueKind } from './completion-spec';

const HELPERS = `# Where the kernel lists the device-mapper devices (name, uuid): readable without root.
typeset -g _dmsnap_sys=\${_dmsnap_sys:-/sys}

# The names of the device-mapper devices whose uuid matches the pattern $1.
_dmsnap_dm_names() {
  emulate -L zsh
  local dir name uuid
  for dir in $_dmsnap_sys/block/dm-*/dm(N); do
    name= uuid=
    read -r name 2>/dev/null <$dir/name
    read -r uuid 2>/dev/null <$dir/uuid
    [[ -n $name && $uuid == \${~1} ]] && print -r -- $name
  done
}

# Offers the device-mapper names whose uuid matches $3, tagged $1, described $2.
_dmsnap_names() {
  local -a names expl
  names=( \${(f)"$(_dmsnap_dm_names $3)"} )
  _wanted $1 expl $2 compadd -a names
}

# Offers the block devices: lsblk's, else the kernel's list; files when none matches.
_dmsnap_block_devices() {
  local -a devices expl
  if (( $+commands[lsblk] )); then
    devices=( \${(fu)"$(lsblk -pnro NAME 2>/dev/null)"} )
  else
    devices=( $_dmsnap_sys/class/block/*(N:t) )
    devices=( /dev/\${^devices} )
  fi
  _wanted devices expl 'block device' compadd -a devices || _files
}

# Offers what each kind given can be: origin, snapshot, dm, device, file, dir, command,
# subcommand (of the group named by the previous word), words=A,B.
_dmsnap_values() {
  local kind ret=1
  local -a expl list
  for kind; do
    case $kind in
      origin) _dmsnap_names origins origin 'DMSNAP-*-origin' && ret=0 ;;
      snapshot) _dmsnap_names snapshots snapshot 'DMSNAP-*-snap-*' && ret=0 ;;
      dm) _dmsnap_names dm-devices 'device-mapper device' '*' && ret=0 ;;
      device) _dmsnap_block_devices && ret=0 ;;
      file) _files && ret=0 ;;
      dir) _files -/ && ret=0 ;;
      command) _describe -t commands 'dmsnap command' _dmsnap_commands && ret=0 ;;
      subcommand) _dmsnap_group "$words[CURRENT-1]" && ret=0 ;;
      words=*)
        list=( \${(s:,:)kind#words=} )
        _wanted values expl value compadd -a list && ret=0
        ;;
    esac
  done
  return ret
}

# After "--" (backup's COMMAND): a command line of its own.
_dmsnap_command_line() {
  local i=\${words[(i)--]}
  words=( "\${(@)words[i+1,-1]}" )
  (( CURRENT -= i ))
  _normal
}

_dmsnap() {
  local curcontext=$curcontext state state_descr line cmd
  local -A opt_args
  _arguments -C -s : $_dmsnap_global_specs '1:command:_dmsnap_values command' '*::argument:->argument' && return 0
  [[ $state == argument ]] || return 1
  cmd=$words[1]
  if [[ " $_dmsnap_groups " == *" $cmd "* ]]; then
    if (( CURRENT == 2 )); then
      _dmsnap_group $cmd
      return
    fi
    cmd="$cmd $words[2]"
    shift words
    (( CURRENT-- ))
  fi
  curcontext=\${curcontext%:*:*}:dmsnap-\${cmd// /-}:
  _dmsnap_command $cmd
}

if [[ $funcstack[1] == _dmsnap ]]; then
  # Autoloaded from $fpath: this file is the function's first call.
  _dmsnap "$@"
else
  compdef _dmsnap dmsnap
fi`;

/** `text` in single quotes for zsh. */
function quote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** An _arguments description, in brackets: backslashes and brackets escaped; none when empty. */
function description(text: string): string {
  return text === '' ? '' : `[${text.replace(/[\\[\]]/g, (c) => `\\${c}`)}]`;
}

/** An _arguments message and action: what the value is, and how to complete it. */
function valueSpec(placeholder: string, kinds: ValueKind[]): string {
  const message = placeholder.replace(/[\\:]/g, (c) => `\\${c}`);
  return kinds.every((k) => k === 'none') ? `:${message}: ` : `:${message}:_dmsnap_values ${kinds.join(' ')}`;
}

/** The _arguments specs of an option: one per flag, excluding each other unless repeatable. */
function optionSpecs(option: CompletionOption): string[] {
  const exclusion = option.flags.length > 1 && !option.multiple ? `(${option.flags.join(' ')})` : '';
  return option.flags.map((flag) => {
    const value = option.value ? `=${description(option.description)}${valueSpec(option.placeholder!, option.value)}` : description(option.description);
    return quote(`${option.multiple ? '*' : exclusion}${flag}${value}`);
  });
}

function positionalSpecs(command: CompletionCommand): string[] {
  const last = command.positionals.length - 1;
  return command.positionals.map((p, i) => quote(`${i === last && command.repeatLast ? '*' : i + 1}${valueSpec(p.placeholder, p.kinds)}`));
}

/** The branch of _dmsnap_command for `command`. */
function commandBranch(command: CompletionCommand): string {
  const specs = ['$_dmsnap_global_specs', ...command.options.flatMap(optionSpecs), ...positionalSpecs(command)];
  const run = command.runsCommand ? 'if (( ${words[(i)--]} < CURRENT )); then _dmsnap_command_line; return; fi\n      ' : '';
  return `    ${quote(command.name)})\n      ${run}_arguments -s -S : \\\n        ${specs.join(' \\\n        ')}\n      ;;`;
}

/** A global array of 'word:description' for _describe. */
function describedArray(name: string, entries: { word: string; description: string }[]): string {
  return `typeset -ga ${name}=(\n${entries.map((e) => `  ${quote(`${e.word}:${e.description}`)}`).join('\n')}\n)`;
}

function tables(spec: CompletionSpec): string {
  const groups = spec.groups.map((g) => `    ${quote(g.name)}) _describe -t commands ${quote(`dmsnap ${g.name} command`)} _dmsnap_group_${g.name} ;;`);
  return [
    describedArray('_dmsnap_commands', spec.commands),
    ...spec.groups.map((g) => describedArray(`_dmsnap_group_${g.name}`, g.commands)),
    `typeset -g _dmsnap_groups=${quote(spec.groups.map((g) => g.name).join(' '))}`,
    `typeset -ga _dmsnap_global_specs=(\n${spec.global.flatMap(optionSpecs).map((s) => `  ${s}`).join('\n')}\n)`,
    '',
    '# Offers the commands of the group $1.',
    '_dmsnap_group() {',
    '  case $1 in',
    ...groups,
    '    *) return 1 ;;',
    '  esac',
    '}',
    '',
    '# Completes the arguments of the command $1.',
    '_dmsnap_command() {',
    '  case $1 in',
    ...spec.perCommand.map(commandBranch),
    '  esac',
    '}',
  ].join('\n');
}

/** The zsh completion script for `spec`, of dmsnap `version`. */
export function zshCompletion(spec: CompletionSpec, version: string): string {
  return `#compdef dmsnap
# zsh completion for dmsnap ${version}, made by "dmsnap completion zsh".
# Install: dmsnap completion zsh > /usr/local/share/zsh/site-functions/_dmsnap
# (any directory in $fpath, as the file _dmsnap; then a new shell), or, for one shell,
# after compinit: source <(dmsnap completion zsh)

${tables(spec)}

${HELPERS}
`;
}
