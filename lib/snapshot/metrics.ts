/**
 * Per-snapshot metrics in the Prometheus text exposition format, for node_exporter's
 * textfile collector (the monitor's --metrics FILE).
 */
import type { SnapshotStatusReport } from './snapshot';

/** What the monitor saw of one snapshot in one pass. */
export interface SnapshotSample {
  origin: string;
  snapshot: string;
  status: SnapshotStatusReport;
  /** When dmsnap created its COW file (ISO 8601); null for a COW device, whose age the kernel does not keep. */
  createdAt: string | null;
  /** Free share (0–1) of the filesystem that holds its COW file, if it has one. */
  hostFreeRatio?: number;
}

const STATES = ['active', 'orphaned', 'merging', 'invalid', 'overflow', 'merge-failed', 'unknown'] as const;

/** A label value, escaped as the format requires. */
function label(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

/** The metrics of `samples`, taken at `nowMs`. */
export function metricsText(samples: SnapshotSample[], nowMs: number): string {
  const out: string[] = [];
  const family = (name: string, help: string, type: 'gauge') => out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  const labels = (s: SnapshotSample, extra = '') => `{origin="${label(s.origin)}",snapshot="${label(s.snapshot)}"${extra}}`;

  family('dmsnap_snapshot_state', 'The snapshot is in this state (1) or not (0).', 'gauge');
  for (const s of samples) for (const state of STATES) out.push(`dmsnap_snapshot_state${labels(s, `,state="${state}"`)} ${s.status.state === state ? 1 : 0}`);
  family('dmsnap_snapshot_cow_used_ratio', 'Share of the COW in use (data and metadata), 0 to 1.', 'gauge');
  for (const s of samples) if (s.status.usedPercent !== null) out.push(`dmsnap_snapshot_cow_used_ratio${labels(s)} ${s.status.usedPercent / 100}`);
  family('dmsnap_snapshot_cow_size_bytes', 'Size of the COW.', 'gauge');
  for (const s of samples) if (s.status.totalSectors !== null) out.push(`dmsnap_snapshot_cow_size_bytes${labels(s)} ${s.status.totalSectors * 512}`);
  family('dmsnap_snapshot_age_seconds', 'Seconds since the snapshot was taken (snapshots on COW files).', 'gauge');
  for (const s of samples) if (s.createdAt) out.push(`dmsnap_snapshot_age_seconds${labels(s)} ${Math.max(0, (nowMs - Date.parse(s.createdAt)) / 1000)}`);
  family('dmsnap_cow_file_host_free_ratio', "Free share of the filesystem that holds the snapshot's COW file, 0 to 1.", 'gauge');
  for (const s of samples) if (s.hostFreeRatio !== undefined) out.push(`dmsnap_cow_file_host_free_ratio${labels(s)} ${s.hostFreeRatio}`);
  family('dmsnap_monitor_last_pass_timestamp_seconds', 'When the monitor last looked at every snapshot.', 'gauge');
  out.push(`dmsnap_monitor_last_pass_timestamp_seconds ${nowMs / 1000}`);
  return `${out.join('\n')}\n`;
}
