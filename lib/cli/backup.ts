/**
 * `dmsnap backup`: snapshot one origin, or several at one instant (a consistency group),
 * mount each read-only, run COMMAND once while watching the COWs, then unmount and drop,
 * also on failure, SIGINT or SIGTERM.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { MAX_FREEZE_MEMBERS } from '../dm/freeze';
import { DmsnapError } from '../errors';
import { openOrigin, type Origin } from '../snapshot';
import { ensureMountDir } from '../safety/paths';
import type { Snapshot, SnapshotStatusReport } from '../snapshot/snapshot';
import { type CliContext, type Command, ExitCode, type ParsedArgs, openDm, UsageError, writeLine } from './command';
import { signalExitCode } from './format';
import { dropAll, type GroupPlan, groupSnapshotOptions, parseGroup, splitCommand, takeGroup } from './group-args';
import { cowFileGuardFromArgs, cowFileGuardOptions, hookHelp, hookOptions, info, invalidMessage, lifecycle, lowSpaceMessage, startCowFileGuard } from './lifecycle-common';
import { DEFAULT_MIN_FREE_PERCENT, type CowFileGuardOptions, type HostSpace } from '../snapshot/cow-guard';

/** node:child_process, loaded when a backup runs its command: the other commands' start-up does not pay for it. */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const childProcess = () => require('node:child_process') as typeof import('node:child_process');

/** What backup runs: on which origins, which program, and the COW usage at which it stops. */
interface BackupPlan {
  names: string[];
  group: GroupPlan;
  program: string;
  programArgs: string[];
  limit: number | undefined;
  guard: CowFileGuardOptions;
}

/** Every usage error, before any device is touched. */
function parsePlan(args: ParsedArgs, io: CliContext): BackupPlan {
  const { names, command } = splitCommand(args);
  const limitText = args.values['usage-limit'] as string | undefined;
  const limit = limitText === undefined ? undefined : Number(limitText);
  if (limit !== undefined && !(limit > 0 && limit <= 100)) throw new UsageError(`--usage-limit must be a percentage above 0 and at most 100; got "${limitText}"`);
  if (args.values['mount-dir'] === '') throw new UsageError('--mount-dir needs a directory');
  const group = parseGroup(args, io, names);
  return { names, group, program: command[0], programArgs: command.slice(1), limit, guard: cowFileGuardFromArgs(args) };
}

/** SIGINT and SIGTERM while backup runs: the first is remembered, and COMMAND gets SIGTERM. */
class SignalTrap {
  signal: NodeJS.Signals | undefined;
  child: ChildProcess | undefined;
  private readonly onSignal = (signal: NodeJS.Signals) => {
    this.signal ??= signal;
    if (this.child) stopCommand(this.child, false);
  };

  constructor() {
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  release(): void {
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
  }
}

interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

/**
 * Stops COMMAND and everything it started: SIGTERM to its process group (programs it ran
 * keep the mount directory busy otherwise), and SIGKILL 5 s later unless `gently`.
 */
function stopCommand(child: ChildProcess, hard = true): void {
  const signalGroup = (signal: NodeJS.Signals) => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, signal);
    } catch {
      child.kill(signal);
    }
  };
  signalGroup('SIGTERM');
  if (hard) setTimeout(() => signalGroup('SIGKILL'), 5000).unref();
}

/**
 * Starts COMMAND in the mount directory, with DMSNAP_MOUNT, and DMSNAP_DEVICE and
 * DMSNAP_ORIGIN (one origin) or DMSNAP_DEVICES and DMSNAP_ORIGINS (a group, space-separated).
 */
function startCommand(plan: BackupPlan, dir: string, snaps: Snapshot[]): { child: ChildProcess; exited: Promise<CommandResult> } {
  const env: NodeJS.ProcessEnv = { ...process.env, DMSNAP_MOUNT: dir };
  if (plan.names.length === 1) Object.assign(env, { DMSNAP_DEVICE: snaps[0].devicePath, DMSNAP_ORIGIN: plan.names[0] });
  else {
    Object.assign(env, { DMSNAP_DEVICES: snaps.map((s) => s.devicePath).join(' '), DMSNAP_ORIGINS: plan.names.join(' ') });
    delete env.DMSNAP_DEVICE;
    delete env.DMSNAP_ORIGIN;
  }
  const child = childProcess().spawn(plan.program, plan.programArgs, {
    cwd: dir,
    stdio: 'inherit',
    // A process group of its own, so that it can be stopped with all it started.
    detached: true,
    env,
  });
  const exited = new Promise<CommandResult>((resolve) => {
    child.on('error', (error) => resolve({ code: null, signal: null, error }));
    child.on('exit', (code, signal) => resolve({ code, signal }));
  });
  return { child, exited };
}

/** Why the snapshot can no longer be trusted (if it cannot), and its last usage seen. */
interface Verdict {
  invalid?: string;
  last?: SnapshotStatusReport;
  /** The free-space guard stopped COMMAND: the COW file's filesystem was nearly full. */
  lowSpace?: HostSpace;
}

/** Watches the snapshot while COMMAND runs; stops COMMAND once it is unusable or at the usage limit. */
function watchUsage(snap: Snapshot, child: ChildProcess, limit: number | undefined, signal: AbortSignal): Verdict {
  const verdict: Verdict = {};
  void (async () => {
    for await (const report of snap.watch({ intervalMs: 500, signal })) {
      if (report.state === 'active') verdict.last = report;
      const unusable = report.state !== 'active' && report.state !== 'merging';
      const overLimit = limit !== undefined && report.usedPercent !== null && report.usedPercent >= limit;
      if (unusable || overLimit) {
        verdict.invalid = unusable ? `became ${report.state}` : `reached the usage limit of ${limit}%`;
        if (overLimit) verdict.last = report;
        stopCommand(child);
        return;
      }
    }
  })().catch(() => undefined);
  return verdict;
}

/** COMMAND's exit status as backup's: 127 if it could not run, 128 + N after signal N. */
function commandExitCode(io: CliContext, program: string, result: CommandResult, stopSignal: NodeJS.Signals | undefined): number {
  if (result.error) {
    writeLine(io.stderr, `dmsnap backup: cannot run "${program}": ${result.error.message}`);
    return 127;
  }
  if (stopSignal) return signalExitCode(stopSignal);
  if (result.signal) return signalExitCode(result.signal);
  return result.code ?? ExitCode.failure;
}

/** Runs COMMAND on the mounted snapshots; exit code 3 if any did not stay valid meanwhile. */
async function runOnSnapshots(io: CliContext, plan: BackupPlan, snaps: Snapshot[], dir: string, trap: SignalTrap, watching: AbortSignal): Promise<number> {
  const { child, exited } = startCommand(plan, dir, snaps);
  trap.child = child;
  const verdicts = snaps.map((snap) => {
    const verdict = watchUsage(snap, child, plan.limit, watching);
    startCowFileGuard(io, snap, plan.guard, watching, (space) => {
      verdict.lowSpace = space;
      stopCommand(child);
    });
    return verdict;
  });
  const result = await exited;
  let invalid = false;
  for (const [i, snap] of snaps.entries()) invalid = (await reportInvalid(io, plan, plan.names[i], snap, verdicts[i])) || invalid;
  return invalid ? ExitCode.snapshotInvalid : commandExitCode(io, plan.program, result, trap.signal);
}

/** Says why the snapshot of `name` cannot be trusted, if it cannot: its COW file's filesystem nearly full, or it became invalid or reached the limit. */
async function reportInvalid(io: CliContext, plan: BackupPlan, name: string, snap: Snapshot, verdict: Verdict): Promise<boolean> {
  if (verdict.lowSpace) {
    writeLine(io.stderr, `dmsnap backup: ${lowSpaceMessage(name, verdict.lowSpace, plan.guard.minFreePercent ?? DEFAULT_MIN_FREE_PERCENT)}`);
    return true;
  }
  // The watch samples; the last word is the state once COMMAND is done.
  if (!verdict.invalid) {
    const final = await snap.status();
    if (final.state !== 'active' && final.state !== 'merging') verdict.invalid = `became ${final.state}`;
  }
  if (verdict.invalid) {
    writeLine(io.stderr, `dmsnap backup: ${invalidMessage(name, snap, verdict.last, verdict.invalid)}`);
    return true;
  }
  return false;
}

/** Unmounts the snapshot, waiting up to 6 s for the programs COMMAND started to let go of it (EBUSY). */
async function unmountSoon(snap: Snapshot): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await snap.unmount();
    } catch (error) {
      if ((error as { code?: string }).code !== 'EBUSY' || attempt >= 30) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

/**
 * Makes the mount points of a group's snapshots, MOUNTDIR/NAME (mode 0700), before the
 * snapshot; one that exists is refused. Each one made is added to `made`, for cleanUp.
 */
function makeMountPoints(dir: string, names: string[], made: string[]): void {
  for (const name of names) {
    const point = join(dir, name);
    try {
      mkdirSync(point, { mode: 0o700 });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      throw new DmsnapError(`${point} exists: dmsnap makes the mount points MOUNTDIR/NAME of a group itself and removes them afterwards; name a mount directory without them, or leave --mount-dir out`, 'EEXIST');
    }
    made.push(point);
  }
}

/** Mounts each snapshot read-only: one origin's on `dir`, a group's on dir/NAME. False once a signal came. */
async function mountAll(io: CliContext, plan: BackupPlan, snaps: Snapshot[], dir: string, trap: SignalTrap): Promise<boolean> {
  for (const [i, snap] of snaps.entries()) {
    const target = plan.names.length === 1 ? dir : join(dir, plan.names[i]);
    const mounted = await snap.mount(target);
    info(io, `dmsnap: ${snap.devicePath} (${mounted.fsType}) mounted read-only on ${target}`);
    if (trap.signal) return false;
  }
  return true;
}

/**
 * Unmounts and drops every snapshot (each also when another fails), removes the mount
 * points backup made, and the mount directory if it made it and all went well.
 */
async function cleanUp(snaps: Snapshot[], mountPoints: string[], madeDir: string | undefined): Promise<void> {
  const failure = await dropAll(snaps, async (snap) => {
    if (snap.mountInfo) await unmountSoon(snap);
  }).then(
    () => undefined,
    (error: unknown) => ({ error }),
  );
  for (const point of mountPoints) {
    try {
      rmdirSync(point);
    } catch {
      // Still mounted (its unmount failed, and is reported): it stays.
    }
  }
  if (failure) throw failure.error;
  if (madeDir) rmSync(madeDir, { recursive: true, force: true });
}

export const backupCommand: Command = {
  name: ['backup'],
  summary: 'snapshot one origin or several at one instant, mount read-only, run COMMAND in it, then unmount and drop',
  usage:
    'NAME... --cow DEVICE...|--cow-file FILE... [--cow-size SIZE] [--min-free PERCENT] [--autoextend T[:S]] [--chunk-size SIZE] [--mount-dir DIR] [--usage-limit PERCENT] ' +
    '[--snapshot-name SNAP...] [--pre-freeze CMD] [--post-thaw CMD] [--hook-dir DIR|--no-hooks] [--hook-timeout SECONDS] -- COMMAND [ARGS...]',
  help: `COMMAND runs with the snapshot's mount directory as its working directory and
DMSNAP_MOUNT, DMSNAP_DEVICE and DMSNAP_ORIGIN in its environment. The snapshot is
unmounted and dropped afterwards, also on failure, SIGINT or SIGTERM. If the snapshot
becomes invalid (COW full) or its usage reaches --usage-limit, COMMAND is terminated
and dmsnap exits 3. Otherwise it exits with COMMAND's status.

With several NAMEs (up to ${MAX_FREEZE_MEMBERS}), one snapshot of each is taken at one instant (a
consistency group, as by dmsnap snapshot): give one --cow (or one --cow-file) per NAME,
paired in order, and --snapshot-name once per NAME or not at all; the NAMEs are as many
as the COWs, and COMMAND follows them after "--". Each snapshot is mounted read-only on
MOUNTDIR/NAME, a directory dmsnap makes (mode 0700) and removes afterwards; with
--mount-dir, MOUNTDIR/NAME must not exist yet. COMMAND runs once, in MOUNTDIR, with
DMSNAP_MOUNT, DMSNAP_ORIGINS and DMSNAP_DEVICES (space-separated, in the order of the
NAMEs) in its environment. --usage-limit, --min-free and --autoextend watch every
snapshot: COMMAND is stopped (exit 3) when any of them reaches its limit.

Hooks run around the freeze as for dmsnap snapshot. A pre-freeze failure aborts with
nothing changed (exit 1); after a post-thaw failure the snapshots are dropped unused and
COMMAND does not run (exit 1).

Options:
  --cow DEVICE            block device for the copied blocks (once per NAME)
  --cow-file FILE         or a new file for them, which dmsnap creates (see dmsnap snapshot)
  --cow-size SIZE         the COW file's size (default: the origin's, plus metadata)
  --preallocate           reserve the COW file's space now (fallocate)
  --min-free PERCENT      with --cow-file: stop (exit 3) when its filesystem has less free (5)
  --autoextend T[:S]      with --cow-file: at T% usage grow it by S% (default 20), as LVM
  --chunk-size SIZE       as for dmsnap snapshot
  --mount-dir DIR         where to mount (default: a new directory under /tmp)
  --usage-limit PERCENT   stop COMMAND when a COW is this full
  --snapshot-name SNAP    the snapshot's name (default NAME-snap; once per NAME)
  --force-wipe            overwrite a COW device that holds data
${hookHelp}

Examples:
  dmsnap backup md2 --cow /dev/sdb6 -- tar -czf /backup/md2.tgz .
  dmsnap backup pgdata pgwal --cow /dev/sdc1 --cow /dev/sdc2 --pre-freeze 'psql -c CHECKPOINT' -- tar -czf /backup/pg.tgz pgdata pgwal`,
  options: { ...groupSnapshotOptions, ...cowFileGuardOptions, ...hookOptions, 'mount-dir': { type: 'string' }, 'usage-limit': { type: 'string' } },
  allowPositionals: true,
  async run(args, io) {
    const plan = parsePlan(args, io);
    using dm = await openDm(io);
    const options = lifecycle(io, dm);
    const origins: Origin[] = [];
    for (const name of plan.names) origins.push(await openOrigin(name, options));
    // Checked before the snapshot exists: a mount directory another user controls is refused.
    const madeDir = args.values['mount-dir'] === undefined;
    const dir = madeDir ? mkdtempSync('/tmp/dmsnap-backup-') : ensureMountDir(args.values['mount-dir'] as string);
    const trap = new SignalTrap();
    const watching = new AbortController();
    const snaps: Snapshot[] = [];
    const mountPoints: string[] = [];
    try {
      if (plan.names.length > 1) makeMountPoints(dir, plan.names, mountPoints);
      await takeGroup(io, plan.group, origins, snaps);
      if (trap.signal) return signalExitCode(trap.signal);
      if (!(await mountAll(io, plan, snaps, dir, trap))) return signalExitCode(trap.signal!);
      return await runOnSnapshots(io, plan, snaps, dir, trap, watching.signal);
    } finally {
      watching.abort();
      trap.release();
      await cleanUp(snaps, mountPoints, madeDir ? dir : undefined);
    }
  },
};
