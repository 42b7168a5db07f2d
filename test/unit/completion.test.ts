/**
 * `dmsnap completion bash|zsh`: the scripts, printed by the CLI in-process, load in bash
 * and zsh without a message, and complete what they should. The device-mapper devices
 * come from a /sys of the test's own (block/dm-N/dm/{name,uuid}), the block devices
 * from an lsblk of its own on PATH. bash runs the completion function on COMP_WORDS;
 * zsh completes a typed line on a pseudo-terminal (test/support/zsh-complete.zsh). The
 * zsh tests are skipped, saying so, where zsh is not installed (CI installs it).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { commands } from '../../lib/cli/main';
import { createFakeSystem } from '../support/fake-binding';
import { runFakeCli } from '../support/fake-cli';

const dir = mkdtempSync(join(tmpdir(), 'dmsnap-completion-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const sys = join(dir, 'sys');
const bin = join(dir, 'bin');
const files = join(dir, 'files');
const hasZsh = spawnSync('sh', ['-c', 'command -v zsh']).status === 0;
const zshDescribe = hasZsh ? describe : describe.skip;
const ZSH_SKIPPED = hasZsh ? '' : ' [skipped: zsh is not installed]';

/** The kernel's device-mapper devices as /sys lists them, and two block devices without lsblk. */
function fakeSys(): void {
  const devices: [string, string][] = [
    ['md2', 'DMSNAP-0123456789abcdef-origin'],
    ['md2-real', 'DMSNAP-0123456789abcdef-real'],
    ['md2-snap', 'DMSNAP-0123456789abcdef-snap-01234567'],
    ['md2-snap-cow', 'DMSNAP-0123456789abcdef-cow-01234567'],
    ['pg', 'DMSNAP-fedcba9876543210-origin'],
    ['wrap', ''],
  ];
  devices.forEach(([name, uuid], i) => {
    mkdirSync(join(sys, `block/dm-${i}/dm`), { recursive: true });
    writeFileSync(join(sys, `block/dm-${i}/dm/name`), `${name}\n`);
    writeFileSync(join(sys, `block/dm-${i}/dm/uuid`), `${uuid}\n`);
  });
  for (const name of ['sda', 'sda1']) mkdirSync(join(sys, 'class/block', name), { recursive: true });
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, 'lsblk'), '#!/bin/sh\nprintf "/dev/sdb\\n/dev/sdb6\\n/dev/sdb6\\n/dev/mapper/md2\\n"\n');
  chmodSync(join(bin, 'lsblk'), 0o755);
  mkdirSync(files);
  writeFileSync(join(files, 'cow-here'), '');
}

const scripts: Record<'bash' | 'zsh', string> = { bash: '', zsh: '' };

beforeAll(async () => {
  fakeSys();
  for (const shell of ['bash', 'zsh'] as const) {
    const result = await runFakeCli(createFakeSystem(), ['completion', shell]);
    expect({ status: result.status, stderr: result.stderr }).toEqual({ status: 0, stderr: '' });
    scripts[shell] = join(dir, `dmsnap.${shell}`);
    writeFileSync(scripts[shell], result.stdout);
  }
  // For $fpath: the file _dmsnap in a directory of its own.
  mkdirSync(join(dir, 'fpath'));
  writeFileSync(join(dir, 'fpath/_dmsnap'), await runFakeCli(createFakeSystem(), ['completion', 'zsh']).then((r) => r.stdout));
});

const env = (path = `${bin}:${process.env.PATH}`) => ({ ...process.env, PATH: path, HOME: dir });

/** What the bash completion function puts in COMPREPLY for `words` (the last one being completed), sorted, without repeats. */
function bashComplete(words: string[], { path = `${bin}:${process.env.PATH}`, sysDir = sys } = {}): string[] {
  const run = 'source "$1"; _dmsnap_sys=$2; shift 2; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; _dmsnap; printf "%s\\n" "${COMPREPLY[@]}"';
  const result = spawnSync('/bin/bash', ['--norc', '--noprofile', '-c', run, 'bash', scripts.bash, sysDir, ...words], { encoding: 'utf8', env: env(path) });
  expect({ words, status: result.status, stderr: result.stderr }).toEqual({ words, status: 0, stderr: '' });
  return [...new Set(result.stdout.split('\n').filter((line) => line !== ''))].sort();
}

/** What zsh offers for the typed `line` with the script sourced (or found in $fpath), sorted, without repeats. */
function zshComplete(line: string, script = scripts.zsh): string[] {
  const result = spawnSync('zsh', ['-f', join(__dirname, '../support/zsh-complete.zsh'), script, line, sys], { encoding: 'utf8', env: env(), timeout: 30_000 });
  expect({ line, status: result.status, stderr: result.stderr }).toEqual({ line, status: 0, stderr: '' });
  return [...new Set(result.stdout.split('\n').filter((l) => l !== ''))].sort();
}

/** [words, what both shells offer]; the last word is the one being completed. */
const CASES: [string[], string[]][] = [
  [['dmsnap', 'sn'], ['snapshot']],
  [['dmsnap', 'snapshot', '--co'], ['--cow', '--cow-file', '--cow-size']],
  [['dmsnap', 'dm', 'ta'], ['table', 'targets']],
  [['dmsnap', '-q', 'st'], ['status']],
  [['dmsnap', '--v'], ['--version']],
  [['dmsnap', 'ls', '--'], ['--help', '--json', '--quiet', '--version']],
  [['dmsnap', 'snapshot', ''], ['md2', 'pg']],
  [['dmsnap', 'image', 'md2', 'p'], ['pg']],
  [['dmsnap', 'snapshot', 'md2', '--cow', '/dev/sd'], ['/dev/sdb', '/dev/sdb6']],
  [['dmsnap', 'detach', ''], ['/dev/mapper/md2', '/dev/sdb', '/dev/sdb6', 'md2', 'pg']],
  [['dmsnap', 'dm', 'table', ''], ['md2', 'md2-real', 'md2-snap', 'md2-snap-cow', 'pg', 'wrap']],
  [['dmsnap', 'dm', 'remove', 'wrap', 'md2-'], ['md2-real', 'md2-snap', 'md2-snap-cow']],
  [['dmsnap', 'drop', 'md2', '--snapshot-name', ''], ['md2-snap']],
  [['dmsnap', 'snapshot', 'md2', '--snapshot-name', ''], []],
  [['dmsnap', 'prepare', '/dev/sdb6', '--name', ''], []],
  [['dmsnap', 'monitor', '--on-full', ''], ['drop', 'keep']],
  [['dmsnap', 'help', 'dm', 'ta'], ['table', 'targets']],
  [['dmsnap', 'help', 're'], ['recover', 'release']],
  [['dmsnap', 'completion', ''], ['bash', 'zsh']],
];

describe('dmsnap completion', () => {
  it('prints a script for bash and for zsh, naming the version, and refuses another shell (exit 2)', async () => {
    for (const shell of ['bash', 'zsh']) {
      const result = await runFakeCli(createFakeSystem(), ['completion', shell]);
      expect(result.stdout).toMatch(new RegExp(`^(#compdef dmsnap\\n)?# ${shell} completion for dmsnap \\d+\\.\\d+\\.\\d+`));
    }
    const fish = await runFakeCli(createFakeSystem(), ['completion', 'fish']);
    expect(fish).toMatchObject({ status: 2, stdout: '', stderr: expect.stringMatching(/^dmsnap completion: unknown shell "fish": bash or zsh\n/) });
  });
});

describe('the bash script', () => {
  it('passes bash -n and, sourced, binds _dmsnap to dmsnap without a message', () => {
    expect(spawnSync('bash', ['-n', scripts.bash], { encoding: 'utf8' })).toMatchObject({ status: 0, stderr: '' });
    const loaded = spawnSync('bash', ['--norc', '--noprofile', '-c', 'source "$1" && complete -p dmsnap', 'bash', scripts.bash], { encoding: 'utf8', env: env() });
    expect(loaded).toMatchObject({ status: 0, stdout: 'complete -F _dmsnap dmsnap\n', stderr: '' });
  });

  it.each(CASES)('completes %j', (words, expected) => {
    expect(bashComplete(words)).toEqual(expected);
  });

  it('completes every command and every option of each command', () => {
    for (const command of commands) {
      const options = Object.keys(command.options).map((name) => `--${name}`);
      expect(bashComplete(['dmsnap', ...command.name, '--'])).toEqual([...options, '--help', '--quiet', '--version'].sort());
    }
    expect(bashComplete(['dmsnap', ''])).toEqual([...new Set(commands.map((c) => c.name[0]))].sort());
  });

  it('completes a value after "=", files, and COMMAND after "--"', () => {
    expect(bashComplete(['dmsnap', 'snapshot', 'md2', '--cow', '=', '/dev/sdb'])).toEqual(['/dev/sdb', '/dev/sdb6']);
    expect(bashComplete(['dmsnap', 'snapshot', 'md2', '--cow-file', join(files, 'co')])).toEqual([join(files, 'cow-here')]);
    expect(bashComplete(['dmsnap', 'apply', join(files, 'c')])).toEqual([join(files, 'cow-here')]);
    expect(bashComplete(['dmsnap', 'backup', 'md2', '--cow', '/dev/sdb6', '--', 'tru'])).toContain('true');
    expect(bashComplete(['dmsnap', 'backup', 'md2', '--cow', '/dev/sdb6', '--', 'tar', join(files, 'c')])).toEqual([join(files, 'cow-here')]);
  });

  it('reads the kernel\'s block devices without lsblk, and offers no name, silently, without device-mapper', () => {
    expect(bashComplete(['dmsnap', 'prepare', '/dev/'], { path: join(dir, 'files') })).toEqual(['/dev/sda', '/dev/sda1']);
    expect(bashComplete(['dmsnap', 'snapshot', ''], { sysDir: join(dir, 'no-sys') })).toEqual([]);
  });
});

zshDescribe(`the zsh script${ZSH_SKIPPED}`, () => {
  it('passes zsh -n and, sourced after compinit, binds _dmsnap to dmsnap without a message', () => {
    expect(spawnSync('zsh', ['-n', scripts.zsh], { encoding: 'utf8' })).toMatchObject({ status: 0, stderr: '' });
    const loaded = spawnSync('zsh', ['-f', '-c', 'autoload -U compinit && compinit -u -D && source "$1" && print -r -- $_comps[dmsnap]', 'zsh', scripts.zsh], {
      encoding: 'utf8',
      env: env(),
    });
    expect(loaded).toMatchObject({ status: 0, stdout: '_dmsnap\n', stderr: '' });
  });

  it('is found by compinit in $fpath, by its #compdef line', () => {
    const found = spawnSync('zsh', ['-f', '-c', 'fpath=("$1" $fpath); autoload -U compinit && compinit -u -D && print -r -- $_comps[dmsnap]', 'zsh', join(dir, 'fpath')], {
      encoding: 'utf8',
      env: env(),
    });
    expect(found).toMatchObject({ status: 0, stdout: '_dmsnap\n', stderr: '' });
  });

  it.each(CASES)('completes %j', (words, expected) => {
    expect(zshComplete(words.join(' '))).toEqual(expected);
  });

  it('completes from $fpath, files, and COMMAND after "--"', () => {
    expect(zshComplete('dmsnap snapshot ', join(dir, 'fpath'))).toEqual(['md2', 'pg']);
    expect(zshComplete(`dmsnap snapshot md2 --cow-file ${join(files, 'co')}`)).toEqual(['cow-here']);
    expect(zshComplete('dmsnap backup md2 --cow /dev/sdb6 -- tru')).toContain('true');
  });
});
