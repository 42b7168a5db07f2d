/**
 * `dmsnap monitor`: runs until SIGTERM or SIGINT, watching every dmsnap snapshot (see
 * lib/snapshot/monitor.ts). Messages go to stderr, one line each; under systemd (its
 * JOURNAL_STREAM is set) each line starts with a syslog priority, <3> to <6>, which
 * journald reads as the entry's priority.
 */
import { monitor, type MonitorEvent } from '../snapshot/monitor';
import { type CliContext, type Command, ExitCode, openDm, type ParsedArgs, UsageError, writeLine } from './command';
import { cowFileGuardFromArgs, lifecycle } from './lifecycle-common';
import { formatBytes } from './sizes';

const PRIORITY = { error: 3, warning: 4, notice: 5, info: 6 } as const;

function describe(event: MonitorEvent): { priority: keyof typeof PRIORITY; text: string } {
  switch (event.kind) {
    case 'found':
      return { priority: 'info', text: `watching ${event.snapshot} of ${event.origin} (${event.state}${event.cowFile ? `, COW file ${event.cowFile}` : ''})` };
    case 'state':
      return { priority: event.state === 'active' ? 'notice' : 'error', text: `${event.snapshot} of ${event.origin} is now ${event.state} (was ${event.previous})` };
    case 'extended':
      return { priority: 'notice', text: `grew the COW file ${event.path} of ${event.snapshot} to ${formatBytes(event.sizeBytes)}` };
    case 'low-space':
      return {
        priority: event.action === 'dropped' ? 'error' : 'warning',
        text: `the filesystem of the COW file ${event.path} of ${event.snapshot} has ${event.freePercent.toFixed(1)}% free, below the margin; ${event.action === 'dropped' ? 'dropped the snapshot (--on-full drop)' : 'kept the snapshot (--on-full keep): free space there'}`,
      };
    case 'gone':
      return { priority: 'info', text: `${event.snapshot} of ${event.origin} is gone` };
    case 'error':
      return { priority: 'error', text: event.message };
  }
}

function log(io: CliContext, event: MonitorEvent): void {
  const { priority, text } = describe(event);
  if (io.quiet && priority === 'info') return;
  const prefix = process.env.JOURNAL_STREAM ? `<${PRIORITY[priority]}>` : '';
  writeLine(io.stderr, `${prefix}dmsnap monitor: ${text}`);
}

function parseInterval(args: ParsedArgs): number {
  const text = args.values.interval as string | undefined;
  if (text === undefined) return 2000;
  const seconds = Number(text);
  if (text.trim() === '' || !(seconds >= 0.1 && seconds <= 3600)) throw new UsageError(`--interval must be a number of seconds from 0.1 to 3600; got "${text}"`);
  return Math.round(seconds * 1000);
}

function parseOnFull(args: ParsedArgs): 'drop' | 'keep' {
  const value = (args.values['on-full'] as string | undefined) ?? 'keep';
  if (value !== 'drop' && value !== 'keep') throw new UsageError(`--on-full must be drop or keep; got "${value}"`);
  return value;
}

export const monitorCommand: Command = {
  name: ['monitor'],
  summary: 'watch every snapshot: autoextend and free-space guard for COW files, metrics',
  usage: '[--autoextend T[:S]] [--min-free PERCENT] [--on-full drop|keep] [--metrics FILE] [--interval SECONDS]',
  help: `Runs until SIGTERM or SIGINT, looking at every dmsnap snapshot each --interval (2 s):
snapshots taken meanwhile are picked up. Reports state changes (a snapshot becoming
invalid, say) on stderr. For snapshots on COW files: grows the file at T% usage by S%
(--autoextend, as LVM's snapshot_autoextend_threshold and _percent), and when the
filesystem that holds it has less than --min-free percent free (5), drops the snapshot
(--on-full drop) or keeps it and warns (keep, the default). Holds no lock while idle.
Ships as systemd/dmsnap-monitor.service.

Options:
  --autoextend T[:S]    grow COW files at T% usage by S% (default 20)
  --min-free PERCENT    free-space margin of COW files' filesystems (default 5)
  --on-full drop|keep   what to do below the margin (default keep)
  --metrics FILE        write per-snapshot metrics there after each pass, for
                        node_exporter's textfile collector (FILE ends in .prom)
  --interval SECONDS    time between passes (default 2)

Example:
  dmsnap monitor --autoextend 70:20 --metrics /var/lib/prometheus/node-exporter/dmsnap.prom`,
  options: {
    autoextend: { type: 'string' },
    'min-free': { type: 'string' },
    'on-full': { type: 'string' },
    metrics: { type: 'string' },
    interval: { type: 'string' },
  },
  async run(args, io) {
    // Parsed as for backup, but no --cow-file is needed: every COW file is watched.
    const guard = cowFileGuardFromArgs({ ...args, values: { ...args.values, 'cow-file': 'any' } });
    const intervalMs = parseInterval(args);
    const onFull = parseOnFull(args);
    const metricsPath = args.values.metrics as string | undefined;
    if (metricsPath === '') throw new UsageError('--metrics needs a file');
    using dm = await openDm(io);
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    try {
      await monitor({ ...lifecycle(io, dm), ...guard, intervalMs, onFull, ...(metricsPath ? { metricsPath } : {}), signal: stop.signal, onEvent: (e) => log(io, e) });
    } finally {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    }
    return ExitCode.ok;
  },
};
