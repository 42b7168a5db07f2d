/**
 * `dmsnap completion bash|zsh`: prints the shell's completion script for dmsnap, made
 * from the command table (completion-spec.ts), so that it always knows every command and
 * option of the dmsnap that prints it.
 */
import { VERSION } from '../version';
import { type Command, ExitCode, positionals, UsageError, writeLine } from './command';
import { bashCompletion } from './completion-bash';
import { completionSpec } from './completion-spec';
import { zshCompletion } from './completion-zsh';

const SHELLS = { bash: bashCompletion, zsh: zshCompletion } as const;

/** The completion command; `commands` gives the command table it completes. */
export function completionCommand(commands: () => readonly Command[]): Command {
  return {
    name: ['completion'],
    summary: 'print the completion script of bash or zsh for dmsnap',
    usage: 'bash|zsh',
    help: `The script completes commands, options, origin names (NAME), device-mapper names
(the dm commands), snapshot names (--snapshot-name of drop and rollback), block devices
(DEVICE, --cow, --attach) and files. Names are read from /sys/block/dm-N/dm (no root
needed, and dmsnap does not run); block devices are what lsblk lists.

Examples:
  dmsnap completion bash > /etc/bash_completion.d/dmsnap
  dmsnap completion zsh > /usr/local/share/zsh/site-functions/_dmsnap
  source <(dmsnap completion bash)      # this shell only (zsh: after compinit)`,
    options: {},
    allowPositionals: true,
    async run(args, io) {
      const [shell] = positionals(args, 1, 1, 'the shell: bash or zsh');
      if (!Object.hasOwn(SHELLS, shell)) throw new UsageError(`unknown shell "${shell}": bash or zsh`);
      writeLine(io.stdout, SHELLS[shell as keyof typeof SHELLS](completionSpec(commands()), VERSION).trimEnd());
      return ExitCode.ok;
    },
  };
}
