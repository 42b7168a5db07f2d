/**
 * `dmsnap backup`: snapshot, mount it read-only, run COMMAND in it while watching the COW,
 * then unmount and drop, also on failure, SIGINT or SIGTERM.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { openOrigin } from '../snapshot';
import { ensureMountDir } from '../safety/paths';
import type { Snapshot, SnapshotStatusReport } from '../snapshot/snapshot';
import { type CliContext, type Command, ExitCode, type ParsedArgs, openDm, UsageError, writeLine } from './command';
import { signalExitCode } from './format';
import { cowFileGuardFromArgs, cowFileGuardOptions, requireCow, startCowFileGuard, info, invalidMessage, lifecycle, lowSpaceMessage, snapshotOptions, snapshotFromArgs } from './lifecycle-common';
import { DEFAULT_MIN_FREE_PERCENT, type CowFileGuardOptions, type HostSpace } from '../snapshot/cow-guard';

/** What backup runs: on which origin, which program, and the COW usage at which it stops. */
interface BackupPlan {
  name: string;
  program: string;
  programArgs: string[];
  limit: number | undefined;
  guard: CowFileGuardOptions;
}

function parsePlan(args: ParsedArgs): BackupPlan {
  const [name, program, ...programArgs] = args.positionals;
  if (!name) throw new UsageError('missing NAME');
  if (!program) throw new UsageError('missing COMMAND after "--"');
  const limitText = args.values['usage-limit'] as string | undefined;
  const limit = limitText === undefined ? undefined : Number(limitText);
  if (limit !== undefined && !(limit > 0 && limit <= 100)) throw new UsageError(`--usage-limit must be a percentage above 0 and at most 100; got "${limitText}"`);
  requireCow(args);
  return { name, program, programArgs, limit, guard: cowFileGuardFromArgs(args) };
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

/** Starts COMMAND in the mount directory, with DMSNAP_MOUNT, DMSNAP_DEVICE and DMSNAP_ORIGIN set. */
function startCommand(plan: BackupPlan, dir: string, snap: Snapshot): { child: ChildProcess; exited: Promise<CommandResult> } {
  const child = spawn(plan.program, plan.programArgs, {
    cwd: dir,
    stdio: 'inherit',
    // A process group of its own, so that it can be stopped with all it started.
    detached: true,
    env: { ...process.env, DMSNAP_MOUNT: dir, DMSNAP_DEVICE: snap.devicePath, DMSNAP_ORIGIN: plan.name },
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

/** Runs COMMAND on the mounted snapshot; exit code 3 if the snapshot did not stay valid meanwhile. */
async function runOnSnapshot(io: CliContext, plan: BackupPlan, snap: Snapshot, dir: string, trap: SignalTrap, watching: AbortSignal): Promise<number> {
  const { child, exited } = startCommand(plan, dir, snap);
  trap.child = child;
  const verdict = watchUsage(snap, child, plan.limit, watching);
  startCowFileGuard(io, snap, plan.guard, watching, (space) => {
    verdict.lowSpace = space;
    stopCommand(child);
  });
  const result = await exited;
  if (verdict.lowSpace) {
    writeLine(io.stderr, `dmsnap backup: ${lowSpaceMessage(plan.name, verdict.lowSpace, plan.guard.minFreePercent ?? DEFAULT_MIN_FREE_PERCENT)}`);
    return ExitCode.snapshotInvalid;
  }
  // The watch samples; the last word is the state once COMMAND is done.
  if (!verdict.invalid) {
    const final = await snap.status();
    if (final.state !== 'active' && final.state !== 'merging') verdict.invalid = `became ${final.state}`;
  }
  if (verdict.invalid) {
    writeLine(io.stderr, `dmsnap backup: ${invalidMessage(plan.name, snap, verdict.last, verdict.invalid)}`);
    return ExitCode.snapshotInvalid;
  }
  return commandExitCode(io, plan.program, result, trap.signal);
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

/** Unmounts and drops the snapshot, and removes the mount directory if backup made it. */
async function cleanUp(snap: Snapshot | undefined, madeDir: string | undefined): Promise<void> {
  if (snap) {
    if (snap.mountInfo) await unmountSoon(snap);
    await snap.drop();
  }
  if (madeDir) rmSync(madeDir, { recursive: true, force: true });
}

export const backupCommand: Command = {
  name: ['backup'],
  summary: 'snapshot, mount read-only, run COMMAND in it, then unmount and drop',
  usage: 'NAME --cow DEVICE|--cow-file FILE [--cow-size SIZE] [--min-free PERCENT] [--autoextend T[:S]] [--chunk-size SIZE] [--mount-dir DIR] [--usage-limit PERCENT] -- COMMAND [ARGS...]',
  help: `COMMAND runs with the snapshot's mount directory as its working directory and
DMSNAP_MOUNT, DMSNAP_DEVICE and DMSNAP_ORIGIN in its environment. The snapshot is
unmounted and dropped afterwards, also on failure, SIGINT or SIGTERM. If the snapshot
becomes invalid (COW full) or its usage reaches --usage-limit, COMMAND is terminated
and dmsnap exits 3. Otherwise it exits with COMMAND's status.

Options:
  --cow DEVICE              block device for the copied blocks
  --cow-file FILE           or a new file for them, which dmsnap creates (see dmsnap snapshot)
  --cow-size SIZE           the COW file's size (default: the origin's, plus metadata)
  --preallocate             reserve the COW file's space now (fallocate)
  --min-free PERCENT        with --cow-file: stop (exit 3) when its filesystem has less free (5)
  --autoextend T[:S]        with --cow-file: at T% usage grow it by S% (default 20), as LVM
  --chunk-size SIZE         as for dmsnap snapshot
  --mount-dir DIR           where to mount (default: a new directory under /tmp)
  --usage-limit PERCENT     stop COMMAND when the COW is this full
  --snapshot-name SNAP      the snapshot's name (default NAME-snap)
  --force-wipe              overwrite a COW device that holds data

Example:
  dmsnap backup md2 --cow /dev/sdb6 -- tar -czf /backup/md2.tgz .`,
  options: { ...snapshotOptions, ...cowFileGuardOptions, 'mount-dir': { type: 'string' }, 'usage-limit': { type: 'string' } },
  allowPositionals: true,
  async run(args, io) {
    const plan = parsePlan(args);
    using dm = await openDm(io);
    const origin = await openOrigin(plan.name, lifecycle(io, dm));
    // Checked before the snapshot exists: a mount directory another user controls is refused.
    const madeDir = args.values['mount-dir'] === undefined;
    const dir = madeDir ? mkdtempSync('/tmp/dmsnap-backup-') : ensureMountDir(args.values['mount-dir'] as string);
    const trap = new SignalTrap();
    const watching = new AbortController();
    let snap: Snapshot | undefined;
    try {
      snap = await snapshotFromArgs(io, origin, args);
      if (trap.signal) return signalExitCode(trap.signal);
      const mounted = await snap.mount(dir);
      info(io, `dmsnap: ${snap.devicePath} (${mounted.fsType}) mounted read-only on ${dir}`);
      if (trap.signal) return signalExitCode(trap.signal);
      return await runOnSnapshot(io, plan, snap, dir, trap, watching.signal);
    } finally {
      watching.abort();
      trap.release();
      await cleanUp(snap, madeDir ? dir : undefined);
    }
  },
};
