/**
 * Application hooks around a snapshot's freeze: commands, callbacks and the executables of a
 * hook directory that quiesce applications (flush a database, pause a writer) before the
 * filesystems are frozen, and let them go on once they are thawed.
 *
 * Hooks run as root, so the hook directory, every hook in it and, for a symlink, its target
 * and the target's directories must be ones only root (or the effective uid) controls, as
 * in lib/safety/paths.ts. Each hook process gets a process group of its own, so that a hook
 * that hangs is killed with everything it started.
 */
import type { ChildProcess } from 'node:child_process';
import { accessSync, constants, lstatSync, readdirSync, readlinkSync, statSync, type Stats } from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { DmsnapError, InvalidArgumentError } from '../errors';
import { describeStat } from '../safety/paths';
import { check, checkInteger } from '../validate';

/** The hook directory used when the options name none. */
export const DEFAULT_HOOK_DIR = '/etc/dmsnap/hooks.d';
/** How long a hook may run by default, in milliseconds. */
export const DEFAULT_HOOK_TIMEOUT_MS = 30_000;
/** node:child_process, loaded with the first hook: most runs have none, and a cold start pays for it. */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const childProcess = () => require('node:child_process') as typeof import('node:child_process');

const MAX_HOOK_TIMEOUT_MS = 3_600_000;
const KILL_GRACE_MS = 2000; // from SIGTERM to SIGKILL of a hook that timed out
const REAP_GRACE_MS = 2000; // after SIGKILL, for a hook that does not end (stuck in the kernel)
const OUTPUT_GRACE_MS = 500; // after a hook's exit, for its output (its children may hold the pipes)
/** The names run-parts runs: no dotfiles, no backup or package-manager leftovers. */
const HOOK_NAME = /^[A-Za-z0-9_-]+$/;
const MAX_SYMLINKS = 40;
const S_ISVTX = 0o1000;

/** When a hook runs: before the filesystems are frozen, or after they are thawed. */
export type HookPhase = 'pre-freeze' | 'post-thaw';

/** What a hook learns about the snapshot it surrounds. */
export interface HookContext {
  /** The origins' device-mapper names. */
  origins: readonly string[];
  /** The snapshots' device-mapper names. */
  snapshots: readonly string[];
}

/** A library caller's hook: an async callback. */
export type HookCallback = (context: HookContext & { phase: HookPhase }) => void | Promise<void>;

/** Which hooks surround a freeze, and how long each may take. */
export interface FreezeHookOptions {
  /** Shell command (run with /bin/sh -c) or callback, before the freeze. */
  preFreeze?: string | HookCallback;
  /** Shell command or callback, after the thaw. */
  postThaw?: string | HookCallback;
  /** Directory of hook executables, each called as `HOOK pre-freeze` / `HOOK post-thaw`; default '/etc/dmsnap/hooks.d' (silently none when it does not exist); false: none. */
  hookDir?: string | false;
  /** Each pre-freeze hook's time limit, ms (default 30000); a post-thaw hook gets the same limit. */
  timeoutMs?: number;
  /** Where hook processes' stdout and stderr go (default: dmsnap's stderr, never its stdout: the CLI's stdout is data). */
  output?: NodeJS.WritableStream;
}

type Action = { command: string } | { callback: HookCallback } | { executable: string };
/** One half of a unit: what messages call it, and what it runs. */
type Step = { label: string; action: Action };
/** A hook directory entry (both phases), or the options' pair; a missing half succeeds. */
type Unit = { pre?: Step; post?: Step };
/** Why a hook failed: `what` names it, `reason` says why ("exited with status 3"). */
type Failure = { what: string; reason: string; cause?: unknown };
type Settings = { timeoutMs: number; output: NodeJS.WritableStream };

function refuse(message: string): never {
  throw new DmsnapError(message, 'ERR_DMSNAP_HOOK_FAILED');
}

function trustedOwner(st: Stats): boolean {
  return st.uid === 0 || st.uid === (process.geteuid?.() ?? 0);
}

/** Symlinks followed so far in one check, shared by its nested walks (a link loop ends it). */
type Walk = { what: string; hops: number };

/**
 * Checks a directory on the way to a hook, and each of its parents, as paths.ts does: owned
 * by root or the effective uid, and writable by no one else unless sticky. Returns its
 * symlink-free path. (ensureTrustedDirectory refuses a directory that is itself a symlink,
 * as /sbin is on merged-/usr systems, which a hook's symlink may well point through.)
 */
function checkDirectory(dir: string, walk: Walk): string {
  const { path, st } = dir === '/' ? { path: dir, st: lstatSync(dir) } : followTrusted(dir, walk);
  if (!st.isDirectory()) refuse(`${walk.what}: ${path} is not a directory`);
  if (!trustedOwner(st) || ((st.mode & 0o022) !== 0 && (st.mode & S_ISVTX) === 0)) {
    refuse(`unsafe ${walk.what}: ${path} is ${describeStat(st)}, so another user can rename what is inside it; chown root and chmod go-w it, or use another path`);
  }
  return path;
}

/** Follows `path` through trusted symlinks to what it names; returns that path (checked, symlink-free) and its Stats. */
function followTrusted(path: string, walk: Walk, parentChecked = false): { path: string; st: Stats } {
  let current = parentChecked ? path : join(checkDirectory(dirname(path), walk), basename(path));
  for (;;) {
    const st = lstatSync(current, { throwIfNoEntry: false }) ?? refuse(`${walk.what}: ${current} does not exist`);
    if (!st.isSymbolicLink()) return { path: current, st };
    if (!trustedOwner(st)) refuse(`unsafe ${walk.what}: ${current} is a symbolic link ${describeStat(st)}, which that user can point anywhere; remove it, or chown -h root it`);
    if (++walk.hops > MAX_SYMLINKS) refuse(`${walk.what}: too many levels of symbolic links at ${current}`);
    const target = resolve(dirname(current), readlinkSync(current));
    current = join(checkDirectory(dirname(target), walk), basename(target));
  }
}

/** Checks the hook directory; returns its real path and the hooks in it, in byte order of their names. */
function hookDirectory(dir: string): Unit[] {
  const { path: real, st } = followTrusted(dir, { what: `hook directory ${dir}`, hops: 0 });
  if (!st.isDirectory()) refuse(`hook directory ${dir}: ${real} is not a directory`);
  // Stricter than paths.ts: in a sticky directory others could still add hooks (hard links to root's programs).
  if (!trustedOwner(st) || (st.mode & 0o022) !== 0) {
    refuse(`unsafe hook directory ${dir}: ${real} is ${describeStat(st)}, so another user could add or replace hooks; chown root ${real} and chmod go-w ${real}`);
  }
  const names = readdirSync(real).filter((name) => HOOK_NAME.test(name));
  names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return names.map((name) => {
    const step: Step = { label: `hook ${join(dir, name)}`, action: { executable: checkHook(join(real, name)) } };
    return { pre: step, post: step };
  });
}

/** Checks one hook directory entry; returns the path of the executable to run. */
function checkHook(entry: string): string {
  const { path, st } = followTrusted(entry, { what: `hook ${entry}`, hops: 0 }, true);
  const shown = path === entry ? entry : `${entry} (${path})`;
  if (!st.isFile()) refuse(`hook ${shown} is not a regular file; remove it from the hook directory`);
  if (!trustedOwner(st) || (st.mode & 0o022) !== 0) {
    refuse(`unsafe hook ${shown}: it is ${describeStat(st)}, so another user could change what it runs; chown root and chmod go-w it, or remove it`);
  }
  try {
    accessSync(path, constants.X_OK);
  } catch {
    refuse(`hook ${shown} is not executable (${describeStat(st)}); chmod +x it, or move it out of the hook directory`);
  }
  return path;
}

function checkHalf(value: unknown, name: string): Step | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'function') return { label: 'callback', action: { callback: value as HookCallback } };
  if (typeof value !== 'string') throw new InvalidArgumentError(`${name} must be a shell command (a string) or a function; got a ${typeof value}`, 'ERR_INVALID_ARG_TYPE');
  check(value.trim().length > 0 && !value.includes('\0'), name, 'a non-empty shell command without NUL bytes', value);
  const shown = value.length > 60 ? `${value.slice(0, 59)}…` : value;
  return { label: `command ${JSON.stringify(shown)}`, action: { command: value } };
}

function checkOptions(options: FreezeHookOptions): Settings & { hookDir: string | false; explicitDir: boolean; own: Unit } {
  check(typeof options === 'object' && options !== null && !Array.isArray(options), 'options', 'an object', options);
  const { hookDir, timeoutMs = DEFAULT_HOOK_TIMEOUT_MS, output = process.stderr } = options;
  const own = { pre: checkHalf(options.preFreeze, 'preFreeze'), post: checkHalf(options.postThaw, 'postThaw') };
  if (hookDir !== undefined && hookDir !== false) {
    if (typeof hookDir !== 'string') throw new InvalidArgumentError(`hookDir must be an absolute path or false; got a ${typeof hookDir}`, 'ERR_INVALID_ARG_TYPE');
    check(isAbsolute(hookDir) && !hookDir.includes('\0'), 'hookDir', 'an absolute path without NUL bytes, or false', hookDir);
  }
  checkInteger(timeoutMs, 'timeoutMs', 1, MAX_HOOK_TIMEOUT_MS);
  check(typeof (output as { write?: unknown } | null)?.write === 'function', 'output', 'a writable stream', output);
  return { hookDir: hookDir === false ? false : resolve(hookDir ?? DEFAULT_HOOK_DIR), explicitDir: hookDir !== undefined, timeoutMs, output, own };
}

function checkContext(context: HookContext): void {
  const names = (list: unknown) => Array.isArray(list) && list.every((name) => typeof name === 'string' && !name.includes('\0'));
  check(typeof context === 'object' && context !== null && names(context.origins) && names(context.snapshots), 'context', 'an object with origins and snapshots, arrays of names', context);
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals | 0): boolean {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, signal);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Runs a hook process in a process group of its own, stdin /dev/null, output to `output`;
 * resolves once it has ended (and its output is in) with why it failed, if it did, leaving
 * no timer or handle behind. Past the time limit: SIGTERM to the group, SIGKILL 2 s later
 * if any of it still lives.
 */
function runProcess(file: string, args: string[], env: NodeJS.ProcessEnv, { timeoutMs, output }: Settings): Promise<string | undefined> {
  return new Promise((resolveEnd) => {
    const child = childProcess().spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env });
    const streams = [child.stdout, child.stderr].filter(Boolean); // none when the spawn failed early (EMFILE)
    for (const stream of streams) stream.pipe(output, { end: false });
    const timers = new Set<NodeJS.Timeout>();
    const later = (fn: () => void, ms: number) => timers.add(setTimeout(fn, ms));
    let timedOut = false;
    let killed = false;
    let settled = false;
    const finish = (reason: string | undefined) => {
      if (settled) return;
      settled = true;
      timers.forEach(clearTimeout);
      for (const stream of streams) stream.unpipe(output).destroy();
      const ended = child.exitCode !== null || child.signalCode !== null;
      if (!ended) child.unref();
      if (timedOut) resolveEnd(`timed out after ${timeoutMs / 1000} s and was killed${ended ? '' : ', but had not ended 2 s after SIGKILL'}`);
      else resolveEnd(reason ?? (child.signalCode ? `was killed by ${child.signalCode}` : child.exitCode === 0 ? undefined : `exited with status ${child.exitCode}`));
    };
    const killRest = () => {
      killed = true;
      signalGroup(child, 'SIGKILL');
      if (child.exitCode !== null || child.signalCode !== null) finish(undefined);
      else later(() => finish(undefined), REAP_GRACE_MS);
    };
    const limit = setTimeout(() => {
      timedOut = true;
      signalGroup(child, 'SIGTERM');
      later(killRest, KILL_GRACE_MS);
    }, timeoutMs);
    timers.add(limit);
    child.on('error', (error) => finish(`could not be started: ${error.message}`));
    child.on('exit', () => {
      if (timedOut) return; // the rest of its group may live on: killRest sees to it
      clearTimeout(limit);
      later(() => finish(undefined), OUTPUT_GRACE_MS);
    });
    // After a timeout, the leader's end is not enough: what it started must be gone too.
    child.on('close', () => {
      if (!timedOut || killed || !signalGroup(child, 0)) finish(undefined);
    });
  });
}

/** Runs a callback; past the time limit it is reported as timed out (it cannot be stopped). */
async function runCallback(callback: HookCallback, argument: HookContext & { phase: HookPhase }, timeoutMs: number): Promise<Omit<Failure, 'what'> | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolveTimeout) => (timer = setTimeout(() => resolveTimeout('timeout'), timeoutMs)));
  try {
    const result = await Promise.race([Promise.resolve().then(() => callback(argument)), timeout]);
    if (result === 'timeout') return { reason: `timed out after ${timeoutMs / 1000} s (a callback cannot be stopped: it may still be running)` };
    return undefined;
  } catch (error) {
    return { reason: `threw: ${error instanceof Error ? error.message : String(error)}`, cause: error };
  } finally {
    clearTimeout(timer);
  }
}

async function runStep(step: Step, phase: HookPhase, context: HookContext, settings: Settings): Promise<Failure | undefined> {
  const { action } = step;
  let failure: Omit<Failure, 'what'> | undefined;
  if ('callback' in action) {
    const argument = Object.freeze({ origins: Object.freeze([...context.origins]), snapshots: Object.freeze([...context.snapshots]), phase });
    failure = await runCallback(action.callback, argument, settings.timeoutMs);
  } else {
    const env = { ...process.env, DMSNAP_HOOK_PHASE: phase, DMSNAP_ORIGINS: context.origins.join(' '), DMSNAP_SNAPSHOTS: context.snapshots.join(' ') };
    const [file, args] = 'command' in action ? ['/bin/sh', ['-c', action.command]] : [action.executable, [phase]];
    const reason = await runProcess(file, args, env, settings).catch((error: Error) => `could not be started: ${error.message}`);
    failure = reason === undefined ? undefined : { reason };
  }
  return failure && { what: `${phase} ${step.label}`, ...failure };
}

function causeOf(failures: readonly Failure[]): unknown {
  const causes = failures.flatMap((f) => (f.cause === undefined ? [] : [f.cause]));
  return causes.length > 1 ? new AggregateError(causes, 'hooks failed') : causes[0];
}

/**
 * The hooks around one freeze: pre-freeze before it, post-thaw after it, each at most once.
 * Load them before anything is changed, so that an unsafe hook stops the snapshot early.
 */
export class FreezeHooks {
  /** Units whose pre-freeze succeeded, in the order it ran. */
  private readonly started: Unit[] = [];
  private preRun: Promise<void> | undefined;
  private thawRun: Promise<void> | undefined;
  private postRun: Promise<void> | undefined;

  private constructor(
    private readonly units: readonly Unit[],
    private readonly settings: Settings,
  ) {}

  /** Resolves the hook directory (checked, listed) once, before anything is changed; throws on an unsafe directory or entry. */
  static async load(options: FreezeHookOptions = {}): Promise<FreezeHooks> {
    const { hookDir, explicitDir, own, ...settings } = checkOptions(options);
    const units: Unit[] = [];
    if (hookDir !== false) {
      if (statSync(hookDir, { throwIfNoEntry: false })) units.push(...hookDirectory(hookDir));
      else if (explicitDir) refuse(`hook directory ${hookDir} does not exist; create it (owned by root, mode 0755) or name another`);
    }
    if (own.pre || own.post) units.push(own);
    return new FreezeHooks(units, settings);
  }

  /** Whether there is any hook at all. */
  get empty(): boolean {
    return this.units.length === 0;
  }

  /**
   * Runs the pre-freeze hooks in order. The first failure stops it: the post-thaw of every
   * unit whose pre-freeze succeeded runs (reverse order), and ERR_DMSNAP_HOOK_FAILED says
   * which hook failed, why, and that nothing was changed. Runs once.
   */
  async preFreeze(context: HookContext): Promise<void> {
    if (this.preRun || this.postRun) throw new Error('the pre-freeze hooks run once, before the post-thaw hooks');
    checkContext(context);
    return (this.preRun = this.runPreFreeze(context));
  }

  /**
   * Runs the post-thaw of every unit whose pre-freeze succeeded, in reverse order, every one
   * even when one fails; throws one ERR_DMSNAP_HOOK_FAILED naming every failed hook. Runs at
   * most once: a second call returns the first call's promise. Waits for a pre-freeze run
   * still under way.
   */
  postThaw(context: HookContext): Promise<void> {
    return (this.postRun ??= this.runPostThaw(context));
  }

  private async runPostThaw(context: HookContext): Promise<void> {
    checkContext(context);
    await this.preRun?.catch(() => undefined);
    return (this.thawRun ??= this.thaw(context));
  }

  private async runPreFreeze(context: HookContext): Promise<void> {
    for (const unit of this.units) {
      const failure = unit.pre && (await runStep(unit.pre, 'pre-freeze', context, this.settings));
      if (!failure) {
        this.started.push(unit);
        continue;
      }
      const undone = this.started.filter((u) => u.post).length;
      const after = await (this.thawRun ??= this.thaw(context)).then(
        () => (undone === 0 ? '' : undone === 1 ? 'the post-thaw of the one hook before it ran; ' : `the post-thaw of the ${undone} hooks before it ran; `),
        (error: Error) => `then ${error.message}; `,
      );
      throw new DmsnapError(`${failure.what} ${failure.reason}; ${after}nothing was changed`, 'ERR_DMSNAP_HOOK_FAILED', { cause: failure.cause });
    }
  }

  private async thaw(context: HookContext): Promise<void> {
    const failures: Failure[] = [];
    for (const unit of [...this.started].reverse()) {
      const failure = unit.post && (await runStep(unit.post, 'post-thaw', context, this.settings));
      if (failure) failures.push(failure);
    }
    if (failures.length > 0) {
      const list = failures.map((f) => `${f.what} ${f.reason}`).join('; ');
      throw new DmsnapError(`${failures.length} post-thaw hook${failures.length > 1 ? 's' : ''} failed: ${list}`, 'ERR_DMSNAP_HOOK_FAILED', { cause: causeOf(failures) });
    }
  }
}
