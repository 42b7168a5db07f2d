/**
 * `dmsnap status` and `dmsnap ls`: the origins dmsnap manages and their snapshots, with
 * COW usage (status) or as a table of devices (ls).
 */
import { listOrigins, openOrigin, type OriginStatus } from '../snapshot';
import { type Command, ExitCode, jsonOption, oneName, openDm, writeLine } from './command';
import { type OriginFields, originFields, originJson, type SnapshotFields, snapshotFields, snapshotJson, writeJson } from './format';
import { info, lifecycle } from './lifecycle-common';
import { formatBytes } from './sizes';
import { sectorsToBytes } from '../units';

function usageBar(percent: number | null): string {
  if (percent === null) return '[' + '-'.repeat(20) + ']';
  const filled = Math.min(20, Math.round(percent / 5));
  return `[${'#'.repeat(filled)}${'.'.repeat(20 - filled)}]`;
}

type SnapshotStatus = OriginStatus['snapshots'][number];

/** How long ago `iso` was: 42s, 17m, 5h, 3d. */
export function age(iso: string, now = Date.now()): string {
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86400)}d`;
}

function snapshotLine(s: SnapshotStatus): string {
  const usage =
    s.allocatedSectors === null ? 'usage -' : `${s.allocatedSectors}/${s.totalSectors} sectors ${usageBar(s.usedPercent)} ${s.usedPercent!.toFixed(1)}%`;
  const cow = s.cowFile ? `${s.cow} (file ${s.cowFile})` : s.cow;
  const tracking = s.trackingSince ? `  tracking since ${s.trackingSince} (${age(s.trackingSince)} ago)` : '';
  return `  ${s.name}  ${s.state}  ${usage}  cow ${cow}  chunk ${s.chunkSectors}  ${s.persistent ? 'persistent' : 'transient'}${tracking}`;
}

/** The origin line's note on a rollback: what is left to merge back, or that it stopped. */
function mergeNote(merge: OriginStatus['merge']): string {
  if (!merge) return '';
  if (merge.state === 'merge-failed') return `  merge of ${merge.cow} STOPPED on an error (see the kernel log)`;
  return `  merging ${merge.cow} back${merge.leftSectors === null ? '' : `, ${formatBytes(sectorsToBytes(merge.leftSectors))} left`}`;
}

function statusJson(statuses: OriginStatus[]) {
  const origins = statuses.map((o) => ({
    ...originJson(o),
    suspended: o.suspended,
    merge: o.merge,
    rollbackAtBoot: o.rollbackAtBoot,
    snapshots: o.snapshots.map((s) => ({
      ...snapshotJson(s),
      state: s.state,
      allocatedSectors: s.allocatedSectors,
      totalSectors: s.totalSectors,
      metadataSectors: s.metadataSectors,
      usedPercent: s.usedPercent,
    })),
  }));
  return { origins };
}

export const statusCommand: Command = {
  name: ['status'],
  summary: 'state and COW usage of origins and their snapshots (step 4)',
  usage: '[NAME] [--json]',
  help: `One line per origin and per snapshot. --json prints
  {"origins": [{"name", "device", "backing", "sizeBytes", "suspended", "merge",
    "snapshots": [{"name", "device", "cow", "cowFile", "chunkSectors", "persistent",
                   "trackingSince", "state", "allocatedSectors", "totalSectors",
                   "metadataSectors", "usedPercent"}]}]}
with numbers as numbers; cowFile is the COW file dmsnap created (cow is then its loop
device), or null; trackingSince is when a tracking snapshot (dmsnap image --track) was
taken, ISO 8601, or null; state is active, invalid, overflow, merging, merge-failed or
unknown. merge is null, or the rollback NAME runs: {"cow", "state": merging or
merge-failed, "leftSectors"} (sectors still to copy back; null once stopped).

Example:
  dmsnap status md2 --json`,
  options: jsonOption,
  allowPositionals: true,
  async run(args, io) {
    const name = args.positionals.length > 0 ? oneName(args) : undefined;
    using dm = await openDm(io);
    const options = lifecycle(io, dm);
    const origins = name ? [await openOrigin(name, options)] : await listOrigins(options);
    const statuses = [];
    for (const origin of origins) statuses.push(await origin.status());
    if (args.values.json) {
      writeJson(io, statusJson(statuses));
      return ExitCode.ok;
    }
    if (statuses.length === 0) info(io, 'dmsnap: no origins; prepare one with "dmsnap prepare DEVICE"');
    for (const o of statuses) {
      writeLine(
        io.stdout,
        `${o.name}  ${o.suspended ? 'SUSPENDED' : 'live'}  ${o.device}  backing ${o.backing ?? '?'}  ${formatBytes(o.sizeBytes)}  ${o.snapshots.length} snapshot(s)${mergeNote(o.merge)}${o.rollbackAtBoot ? `  rollback to ${o.rollbackAtBoot.snapshot} at the next boot` : ''}`,
      );
      for (const s of o.snapshots) writeLine(io.stdout, snapshotLine(s));
    }
    return ExitCode.ok;
  },
};

type LsRow = { origin: OriginFields; snaps: SnapshotFields[] };

/** Columns NAME TYPE DEVICE BACKING/COW SIZE, each as wide as its widest cell but the last. */
function lsTable(rows: LsRow[]): string[] {
  const table: string[][] = [['NAME', 'TYPE', 'DEVICE', 'BACKING/COW', 'SIZE']];
  const kind = (s: SnapshotFields) => (s.trackingSince ? `tracking(${age(s.trackingSince)})` : 'snapshot');
  for (const { origin, snaps } of rows) {
    table.push([origin.name, 'origin', origin.device, origin.backing ?? '?', formatBytes(origin.sizeBytes)]);
    for (const s of snaps) table.push([s.name, kind(s), s.device, s.cowFile ?? s.cow, formatBytes(origin.sizeBytes)]);
  }
  const widths = table[0].map((_, c) => Math.max(...table.map((r) => r[c].length)));
  return table.map((row) => row.map((cell, c) => (c === row.length - 1 ? cell : cell.padEnd(widths[c]))).join('  '));
}

export const lsCommand: Command = {
  name: ['ls'],
  summary: 'list the origins and snapshots dmsnap manages (found from the kernel)',
  usage: '[--json]',
  help: `Columns: NAME TYPE DEVICE BACKING-OR-COW SIZE; TYPE is origin, snapshot, or
tracking(AGE) for a tracking snapshot (dmsnap image --track). --json prints
  {"origins": [{"name", "device", "backing", "sizeBytes",
    "snapshots": [{"name", "device", "cow", "cowFile", "chunkSectors", "persistent", "trackingSince"}]}]}

Example:
  dmsnap ls`,
  options: jsonOption,
  async run(args, io) {
    using dm = await openDm(io);
    const rows: LsRow[] = [];
    for (const origin of await listOrigins(lifecycle(io, dm))) {
      rows.push({ origin: originFields(origin), snaps: (await origin.snapshots()).map(snapshotFields) });
    }
    if (args.values.json) {
      writeJson(io, { origins: rows.map(({ origin, snaps }) => ({ ...originJson(origin), snapshots: snaps.map(snapshotJson) })) });
      return ExitCode.ok;
    }
    for (const line of lsTable(rows)) writeLine(io.stdout, line);
    return ExitCode.ok;
  },
};
