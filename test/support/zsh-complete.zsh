# What zsh's completion offers for a command line, one match per line:
#
#   zsh -f test/support/zsh-complete.zsh SCRIPT 'dmsnap snapshot --co' [SYS]
#
# Starts an interactive zsh on a pseudo-terminal (zpty), loads compinit and SCRIPT (a
# completion script, sourced after compinit; or a directory, put in $fpath before it;
# SYS replaces the script's /sys), then types the line and TAB.
# There, compadd is wrapped to print the matches it is given (as they match the word)
# between two marker lines, instead of showing them; the shell exits after the
# completion. Prints "zsh-complete: ..." on stderr and exits 2 when it cannot run.
if [[ $1 == --setup ]]; then
  # In the shell on the pseudo-terminal.
  PROMPT= RPROMPT= PS2=
  # A directory: for $fpath, where compinit finds the script by its #compdef line.
  [[ -d $2 ]] && fpath=( $2 $fpath )
  autoload -U compinit && compinit -u -D
  [[ -d $2 ]] || source $2 || print -r -- 'zsh-complete: cannot source the script'
  [[ -n $3 ]] && _dmsnap_sys=$3
  bindkey '^I' complete-word
  zstyle ':completion:*' list-grouped false
  zstyle ':completion:*' insert-tab false
  _zsh_complete_mark() { print -r -- '<<zsh-complete>>' }
  compprefuncs=( _zsh_complete_mark )
  comppostfuncs=( _zsh_complete_mark exit )
  compadd() {
    # Calls that only ask (-O, -A, -D) go through.
    if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then
      builtin compadd "$@"
      return
    fi
    local -a __hits
    builtin compadd -A __hits "$@"
    (( $#__hits )) || return 1
    print -rl -- $__hits
  }
  print -r -- '<<zsh-ready>>'
  return 0
fi

zmodload zsh/zpty || { print -u2 'zsh-complete: no zsh/zpty module'; exit 2 }
zpty z zsh -f -i || { print -u2 'zsh-complete: zpty failed'; exit 2 }
zpty -w z "source ${(q)0:A} --setup ${(q)1:A} ${(q)3}"
if ! zpty -r -m z line '*<<zsh-ready>>*'; then
  print -u2 'zsh-complete: the shell did not start'
  exit 2
fi
zpty -w -n z "$2"$'\t'
output=
while zpty -r z chunk; do
  output+=$chunk
done
zpty -d z
# The matches: the lines between the two markers.
parts=( "${(@s:<<zsh-complete>>:)output}" )
if (( $#parts < 3 )); then
  print -u2 -r -- "zsh-complete: no completion ran; the terminal showed: ${(q+)output}"
  exit 2
fi
for line in "${(@f)${parts[2]//$'\r'/}}"; do
  [[ -n $line ]] && print -r -- $line
done
exit 0
