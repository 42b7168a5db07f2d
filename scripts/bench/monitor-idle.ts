/**
 * The benchmark's idle cost of `dmsnap monitor`: ten snapshots live (ten small origins,
 * five snapshots on COW devices and five on COW files), the monitor started with its
 * defaults (a pass every 2 s), left to settle, then its CPU time (/proc/PID/stat utime +
 * stime) and resident memory (/proc/PID/status VmRSS, VmHWM) over 30 s; then SIGTERM,
 * which must end it with exit status 0.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { prepare, type DeviceMapper, type Origin, type Snapshot } from '../../lib';
import { sh } from './setup';

export interface MonitorIdleResult {
  snapshots: number;
  /** The monitor's pass interval (its default), the wait after it saw every snapshot, and the sampling window, in s. */
  intervalS: number;
  settleS: number;
  sampleS: number;
  /** CPU time (user + system) over the window, in s, and as a percentage of one core. */
  cpuSeconds: number;
  cpuPercent: number;
  /** VmRSS once a second over the window, in MiB. */
  rssMiB: number[];
  /** VmHWM at the end of the window (the peak since the monitor started), in MiB. */
  hwmMiB: number;
  /** Snapshots the monitor reported watching; its other messages on stderr. */
  watched: number;
  otherMessages: string[];
  /** How SIGTERM ended it, and how long it took. */
  exitCode: number | null;
  exitSignal: string | null;
  exitMs: number;
}

const MiB = 1024 * 1024;
const SNAPSHOTS = 10;
const SETTLE_S = 5;
const SAMPLE_S = Number(process.env.DMSNAP_BENCH_MONITOR_SECONDS ?? 30);

/** utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat). */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** A field of /proc/PID/status in kB, as MiB. */
function statusMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(match[1]) / 1024;
}

export async function measureMonitorIdle(dm: DeviceMapper, work: string, loop: (dir: string, name: string, sizeBytes: number) => string, cli: string): Promise<MonitorIdleResult> {
  const origins: Origin[] = [];
  const snaps: Snapshot[] = [];
  const hostDir = join(work, 'monitor-cow-host');
  let hostMounted = false;
  try {
    const hostDisk = loop(work, 'monitor-cow-host.img', 128 * MiB);
    sh('mkfs.ext4', ['-q', '-F', hostDisk]);
    mkdirSync(hostDir);
    sh('mount', [hostDisk, hostDir]);
    hostMounted = true;
    for (let i = 0; i < SNAPSHOTS; i++) {
      const origin = await prepare(loop(work, `monitor${i}.img`, 32 * MiB), { dm, name: `bench-m${i}` });
      origins.push(origin);
      snaps.push(
        i % 2 === 0
          ? await origin.snapshot({ cow: loop(work, `monitor-cow${i}.img`, 8 * MiB) })
          : await origin.snapshot({ cowFile: { path: join(hostDir, `m${i}.cow`), sizeBytes: 8 * MiB } }),
      );
    }

    const child = spawn(process.execPath, [cli, 'monitor'], { stdio: ['ignore', 'ignore', 'pipe'] });
    const exited = new Promise<[number | null, string | null]>((resolve) => child.on('exit', (code, signal) => resolve([code, signal])));
    const lines: string[] = [];
    let partial = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop()!;
      lines.push(...parts);
    });
    const watched = () => lines.filter((line) => line.includes('dmsnap monitor: watching ')).length;
    try {
      // Its first pass reports every snapshot; then it is left to settle.
      const deadline = performance.now() + 120_000;
      while (watched() < SNAPSHOTS && child.exitCode === null && performance.now() < deadline) await sleep(200);
      if (watched() < SNAPSHOTS) throw new Error(`dmsnap monitor reported ${watched()} of ${SNAPSHOTS} snapshots: ${lines.join(' | ')}`);
      await sleep(SETTLE_S * 1000);
      const pid = child.pid!;
      const ticksPerSecond = Number(sh('getconf', ['CLK_TCK']).trim());
      const t0 = performance.now();
      const ticks0 = cpuTicks(pid);
      const rssMiB: number[] = [];
      for (let s = 0; s < SAMPLE_S; s++) {
        await sleep(t0 + (s + 1) * 1000 - performance.now());
        rssMiB.push(statusMiB(pid, 'VmRSS'));
      }
      const cpuSeconds = (cpuTicks(pid) - ticks0) / ticksPerSecond;
      const wallSeconds = (performance.now() - t0) / 1000;
      const hwmMiB = statusMiB(pid, 'VmHWM');
      const stopAt = performance.now();
      child.kill('SIGTERM');
      const timeout = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const [exitCode, exitSignal] = await exited;
      clearTimeout(timeout);
      return {
        snapshots: SNAPSHOTS,
        intervalS: 2,
        settleS: SETTLE_S,
        sampleS: SAMPLE_S,
        cpuSeconds,
        cpuPercent: (100 * cpuSeconds) / wallSeconds,
        rssMiB,
        hwmMiB,
        watched: watched(),
        otherMessages: lines.filter((line) => line !== '' && !line.includes('dmsnap monitor: watching ')),
        exitCode,
        exitSignal,
        exitMs: performance.now() - stopAt,
      };
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    }
  } finally {
    const warn = (error: Error) => void process.stderr.write(`bench: monitor cleanup: ${error.message}\n`);
    for (const snap of snaps) await snap.drop().catch(warn);
    for (const origin of origins) await origin.release().catch(warn);
    if (hostMounted) sh('umount', [hostDir]);
  }
}
