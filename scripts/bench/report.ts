/**
 * The benchmark's markdown report (npm run bench): medians, ratios and the targets, from
 * the raw numbers scripts/bench/run.ts collects in the VM.
 */
import type { CowKind, CowKindsResult, FioResult } from './cow-kinds';
import type { GroupResult } from './group';
import type { IncrementalResult } from './incremental';
import type { MonitorIdleResult } from './monitor-idle';

/** One contender's samples, in ms. */
export interface Samples {
  take: number[];
  drop: number[];
  stall: number[];
}

export const median = (xs: number[]) => quantile(xs, 0.5);
export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  const at = (sorted.length - 1) * q;
  const lo = Math.floor(at);
  return sorted[lo] + (sorted[Math.ceil(at)] - sorted[lo]) * (at - lo);
}

export type Results = {
  machine: { kernel: string; udev: boolean; emulation: string };
  rounds: number;
  contenders: Record<string, Samples>;
  freezeMs: number[];
  throughputMiBps: { dd: number[]; dmsnapImage: number[]; createReadStream: number[] };
  statusPerSecond: number;
  cliPeakRssMiB: Record<string, number>;
  list1000Ms: number[];
  nodeStartupMs?: number[];
  cowKinds?: CowKindsResult;
  incremental?: IncrementalResult;
  groups?: GroupResult;
  monitorIdle?: MonitorIdleResult;
};

/** The markdown report, with ratios and the targets of the benchmark. */
export function report(r: Results): string {
  const c = r.contenders;
  const m = (name: string, key: keyof Samples) => median(c[name][key]);
  const p90 = (name: string, key: keyof Samples) => quantile(c[name][key], 0.9);
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '—');
  const ratio = (x: number, y: number) => (Number.isFinite(x) && Number.isFinite(y) && y > 0 ? (x / y).toFixed(2) : '—');
  const lines = [
    `Machine: ${r.machine.emulation}, Debian kernel ${r.machine.kernel}, ${r.machine.udev ? 'with' : 'without'} udev; ${r.rounds} cycles per contender, in alternation.`,
    'Absolute times in the emulated VM are not real-hardware times; the ratios are what compare.',
    '',
    '| contender | take median (ms) | take p90 | drop median (ms) | drop p90 | writer stall median (ms) | stall p90 | take ÷ seed | stall ÷ seed | stall ÷ floor |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const name of Object.keys(c)) {
    lines.push(
      `| ${name} | ${f(m(name, 'take'))} | ${f(p90(name, 'take'))} | ${f(m(name, 'drop'))} | ${f(p90(name, 'drop'))} | ${f(m(name, 'stall'))} | ${f(p90(name, 'stall'))} | ${ratio(m(name, 'take'), m('seed-dmsetup', 'take'))} | ${ratio(m(name, 'stall'), m('seed-dmsetup', 'stall'))} | ${ratio(m(name, 'stall'), m('floor', 'stall'))} |`,
    );
  }
  const t = r.throughputMiBps;
  lines.push(
    '',
    `| other | value |`,
    `| --- | ---: |`,
    `| dmsnap-lib freeze (suspend → resume), median | ${f(median(r.freezeMs))} ms |`,
    `| image throughput: dd bs=1M | ${f(median(t.dd))} MiB/s |`,
    `| image throughput: dmsnap image (copyDevice) | ${f(median(t.dmsnapImage))} MiB/s (${ratio(median(t.dmsnapImage), median(t.dd))} × dd) |`,
    `| image throughput: snapshot.createReadStream | ${f(median(t.createReadStream))} MiB/s (${ratio(median(t.createReadStream), median(t.dd))} × dd) |`,
    `| DeviceMapper.list() with 1,000 devices, median | ${f(median(r.list1000Ms))} ms |`,
    `| snapshot.status() calls per second | ${f(r.statusPerSecond)} |`,
    `| CLI peak RSS: status / snapshot / drop | ${f(r.cliPeakRssMiB.status)} / ${f(r.cliPeakRssMiB.snapshot)} / ${f(r.cliPeakRssMiB.drop)} MiB |`,
    `| \`node -e 0\` under the same writers, median | ${f(median(r.nodeStartupMs ?? []))} ms |`,
  );
  const check = (ok: boolean, text: string) => `- ${ok ? 'met' : 'MISSED'}: ${text}`;
  const seedTake = m('seed-dmsetup', 'take');
  const lvmTake = m('lvm', 'take');
  lines.push(
    '',
    'Targets:',
    check(m('dmsnap-lib', 'stall') <= 1.25 * m('floor', 'stall'), `dmsnap-lib writer stall ≤ 1.25 × floor (${ratio(m('dmsnap-lib', 'stall'), m('floor', 'stall'))})`),
    check(m('dmsnap-lib', 'stall') <= m('lvm', 'stall'), `dmsnap-lib writer stall ≤ lvm (${ratio(m('dmsnap-lib', 'stall'), m('lvm', 'stall'))})`),
    check(m('dmsnap-lib', 'stall') <= m('seed-dmsetup', 'stall') / 8, `dmsnap-lib writer stall ≤ 1/8 of seed-dmsetup (${ratio(m('dmsnap-lib', 'stall'), m('seed-dmsetup', 'stall'))})`),
    check(m('dmsnap-lib', 'take') <= Math.min(seedTake, lvmTake) / 10, `dmsnap-lib take ≤ 1/10 of seed-dmsetup and lvm (${ratio(m('dmsnap-lib', 'take'), seedTake)}, ${ratio(m('dmsnap-lib', 'take'), lvmTake)})`),
    check(m('dmsnap-lib', 'drop') <= Math.min(m('seed-dmsetup', 'drop'), m('lvm', 'drop')) / 10, `dmsnap-lib drop ≤ 1/10 of seed-dmsetup and lvm (${ratio(m('dmsnap-lib', 'drop'), m('seed-dmsetup', 'drop'))}, ${ratio(m('dmsnap-lib', 'drop'), m('lvm', 'drop'))})`),
    check(m('dmsnap-cli', 'take') <= 0.8 * Math.min(seedTake, lvmTake), `dmsnap-cli take ≤ 0.8 × seed-dmsetup and lvm (${ratio(m('dmsnap-cli', 'take'), seedTake)}, ${ratio(m('dmsnap-cli', 'take'), lvmTake)})`),
    check(median(t.dmsnapImage) >= 0.9 * median(t.dd), `image throughput ≥ 0.9 × dd bs=1M (${ratio(median(t.dmsnapImage), median(t.dd))})`),
  );
  if (c['dmsnap-lib-cow-file']) {
    const ofLib = ratio(m('dmsnap-lib-cow-file', 'stall'), m('dmsnap-lib', 'stall'));
    lines.push(check(m('dmsnap-lib-cow-file', 'stall') <= 1.25 * m('dmsnap-lib', 'stall'), `writer stall with a COW file ≤ 1.25 × with a COW device (${ofLib})`));
  }
  if (r.incremental) {
    const { full, incremental: inc } = r.incremental;
    lines.push(
      check(inc.bytesRead * 20 <= full.bytesRead, `incremental image reads ≥ 20× fewer bytes than a full one (${ratio(full.bytesRead, inc.bytesRead)}×)`),
      check(inc.ms * 10 <= full.ms, `incremental image takes ≥ 10× less time than a full one (${ratio(full.ms, inc.ms)}×)`),
      check(r.incremental.imageMatches, 'the updated image equals the new tracking snapshot (sha256)'),
    );
  }
  if (r.groups) {
    const g = r.groups;
    for (const n of [2, 4] as const) {
      lines.push(check(median(g[n].stall) <= 1.3 * median(g[1].stall), `writer stall of a group of ${n} ≤ 1.3 × one origin's (${ratio(median(g[n].stall), median(g[1].stall))})`));
    }
  }
  if (r.cowKinds) lines.push(...cowKindsTargets(r.cowKinds, ratio));
  if (r.monitorIdle) lines.push(...monitorTargets(r.monitorIdle, f));
  lines.push('');
  if (r.cowKinds) lines.push(...cowKindsTable(r.cowKinds, f, ratio), '');
  if (r.groups) lines.push(...groupTable(r.groups, f, ratio), '');
  if (r.incremental) lines.push(...incrementalTable(r.incremental, f), '');
  if (r.monitorIdle) lines.push(...monitorTable(r.monitorIdle, f), '');
  return lines.join('\n');
}

type Format = (x: number) => string;
type Ratio = (x: number, y: number) => string;
const fmt: Format = (x) => (Number.isFinite(x) ? x.toFixed(1) : '—');
const ratioOf: Ratio = (x, y) => (Number.isFinite(x) && Number.isFinite(y) && y > 0 ? (x / y).toFixed(2) : '—');

const fioMedian = (k: CowKindsResult, kind: CowKind, key: keyof FioResult) => median((k.fio[kind] ?? []).map((x) => x[key]));

/** Each dmsnap kind: its stack, its number of snapshots, its COW, and LVM's kind with as many snapshots. */
const FIO_ROWS: [CowKind, 'dmsnap' | 'LVM', number, string, CowKind | null][] = [
  ['none', 'dmsnap', 0, '—', 'lvm-none'],
  ['cow-device', 'dmsnap', 1, 'COW device (loop over a file)', 'lvm-1'],
  ['cow-device-2', 'dmsnap', 2, 'COW devices (loops over files)', 'lvm-2'],
  ['cow-file', 'dmsnap', 1, "sparse COW file on ext4 (dmsnap's loop)", 'lvm-1'],
  ['cow-file-preallocated', 'dmsnap', 1, 'preallocated COW file on ext4', 'lvm-1'],
  ['lvm-none', 'LVM', 0, '—', null],
  ['lvm-1', 'LVM', 1, 'snapshot LV in the VG', null],
  ['lvm-2', 'LVM', 2, 'snapshot LVs in the VG', null],
];

/** Origin writes under 0, 1 and 2 snapshots, dmsnap's and LVM's, by kind of COW. */
function cowKindsTable(k: CowKindsResult, f: Format, ratio: Ratio): string[] {
  const med = (kind: CowKind, key: keyof FioResult) => fioMedian(k, kind, key);
  const chunk = k.chunkKiB ? `${k.chunkKiB} KiB chunks for both (dmsnap's default chunk size, 32 sectors, given explicitly; \`lvcreate -s -L 128M -c ${k.chunkKiB}k\`)` : 'chunks of 16 KiB';
  const rows = FIO_ROWS.filter(([kind]) => k.fio[kind] !== undefined);
  return [
    `Origin writes under live snapshots: fio ${k.fioArgs.join(' ')} on a file of the origin's XFS, dmsnap's origin and LVM's equivalent LV (512 MiB each, the file laid out in full before the snapshots), ${chunk}, 128 MiB of COW per snapshot; median of ${k.fio.none?.length ?? 0} run${k.fio.none?.length === 1 ? '' : 's'} per kind, the kinds in rotation.`,
    '',
    '| stack | snapshots | COW | IOPS | MiB/s | p99 latency (ms) | IOPS ÷ no snapshot (same stack) | dmsnap ÷ LVM (IOPS, same snapshots) |',
    '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(([kind, stack, n, cow, lvm]) => {
      const bare: CowKind = stack === 'dmsnap' ? 'none' : 'lvm-none';
      return `| ${stack} | ${n} | ${cow} | ${f(med(kind, 'iops'))} | ${f(med(kind, 'MiBps'))} | ${med(kind, 'p99Ms').toFixed(2)} | ${ratio(med(kind, 'iops'), med(bare, 'iops'))} | ${lvm ? ratio(med(kind, 'iops'), med(lvm, 'iops')) : '—'} |`;
    }),
    '',
    `COW file against COW device, IOPS with 1 snapshot: sparse ${ratio(med('cow-file', 'iops'), med('cow-device', 'iops'))} ×, preallocated ${ratio(med('cow-file-preallocated', 'iops'), med('cow-device', 'iops'))} ×.`,
  ];
}

/** The anchor of the fio rows: LVM with as many snapshots. */
function cowKindsTargets(k: CowKindsResult, ratio: Ratio): string[] {
  const med = (kind: CowKind) => fioMedian(k, kind, 'iops');
  if (k.fio['lvm-1'] === undefined) return [];
  return ([['cow-device', 'lvm-1', 1], ['cow-device-2', 'lvm-2', 2]] as const).map(
    ([kind, lvm, n]) =>
      `- ${med(kind) >= med(lvm) ? 'met' : 'MISSED'}: origin writes under ${n} dmsnap snapshot${n > 1 ? 's' : ''} (COW device${n > 1 ? 's' : ''}) ≥ under ${n} LVM snapshot${n > 1 ? 's' : ''}, IOPS (${ratio(med(kind), med(lvm))}; ${ratio(med(kind), med('none'))} against ${ratio(med(lvm), med('lvm-none'))} of their stacks' speed without a snapshot)`,
  );
}

/** The fio table and its anchor alone (DMSNAP_BENCH_ONLY=fio). */
export function cowKindsReport(k: CowKindsResult): string {
  return [...cowKindsTable(k, fmt, ratioOf), '', ...cowKindsTargets(k, ratioOf), ''].join('\n');
}

const MONITOR_CPU_PERCENT = 1;
const MONITOR_RSS_MiB = 60;

function monitorTargets(m: MonitorIdleResult, f: Format): string[] {
  const rss = Math.max(...m.rssMiB);
  return [
    `- ${m.cpuPercent < MONITOR_CPU_PERCENT ? 'met' : 'MISSED'}: dmsnap monitor idle with ${m.snapshots} snapshots < ${MONITOR_CPU_PERCENT} % of a core (${m.cpuPercent.toFixed(2)} %)`,
    `- ${rss < MONITOR_RSS_MiB ? 'met' : 'MISSED'}: dmsnap monitor idle with ${m.snapshots} snapshots < ${MONITOR_RSS_MiB} MiB RSS (${f(rss)} MiB at most)`,
    `- ${m.exitCode === 0 ? 'met' : 'MISSED'}: SIGTERM ends dmsnap monitor with exit status 0 (${m.exitCode ?? `signal ${m.exitSignal}`})`,
  ];
}

/** `dmsnap monitor` idle with 10 snapshots: CPU and memory. */
function monitorTable(m: MonitorIdleResult, f: Format): string[] {
  return [
    `\`dmsnap monitor\` idle: ${m.snapshots} snapshots (as many origins of 32 MiB, half on COW devices, half on COW files), the monitor with its defaults (a pass every ${m.intervalS} s), left ${m.settleS} s after it reported every snapshot, then sampled for ${m.sampleS} s (/proc/PID/stat utime + stime, /proc/PID/status). Anchor: LVM's dmeventd is not comparable under this VM (it is not running); the idle target is < ${MONITOR_CPU_PERCENT} % of a core, < ${MONITOR_RSS_MiB} MiB RSS.`,
    '',
    '| monitor, idle | value |',
    '| --- | ---: |',
    `| CPU, user + system | ${m.cpuPercent.toFixed(2)} % of a core (${m.cpuSeconds.toFixed(2)} s in ${m.sampleS} s) |`,
    `| RSS (VmRSS), median / max over the window | ${f(median(m.rssMiB))} / ${f(Math.max(...m.rssMiB))} MiB |`,
    `| peak RSS since start (VmHWM) | ${f(m.hwmMiB)} MiB |`,
    `| snapshots it reported watching | ${m.watched} of ${m.snapshots} |`,
    `| SIGTERM → exit | ${m.exitCode !== null ? `status ${m.exitCode}` : `signal ${m.exitSignal}`} after ${f(m.exitMs)} ms |`,
    ...(m.otherMessages.length ? ['', `Its other messages: ${m.otherMessages.map((line) => `\`${line}\``).join('; ')}`] : []),
  ];
}

/** The monitor's table and target alone (DMSNAP_BENCH_ONLY=monitor). */
export function monitorReport(m: MonitorIdleResult): string {
  return [...monitorTable(m, fmt), '', ...monitorTargets(m, fmt), ''].join('\n');
}

/** Full against incremental image of a 1 GiB origin with 1 % changed. */
function incrementalTable(r: IncrementalResult, f: Format): string[] {
  const MiB = 1024 * 1024;
  return [
    `Incremental against full image: ${f(r.originBytes / MiB)} MiB origin (XFS, 256 MiB of data), ${f(r.changedBytes / MiB)} MiB changed (1 %); bytes read by the process (/proc/self/io rchar).`,
    '',
    '| image | MiB read | wall time (ms) |',
    '| --- | ---: | ---: |',
    `| full, with --track | ${f(r.full.bytesRead / MiB)} | ${f(r.full.ms)} |`,
    `| incremental --update (${r.incremental.extents} extents, ${f(r.incremental.bytesCopied / MiB)} MiB copied) | ${f(r.incremental.bytesRead / MiB)} | ${f(r.incremental.ms)} |`,
  ];
}

/** Group snapshots of 1, 2 and 4 origins, each origin with its own writer. */
function groupTable(g: GroupResult, f: Format, ratio: Ratio): string[] {
  return [
    `Group snapshots: 4 XFS origins with a writer each, all writing; a group's stall is its worst member's; ${g[1].take.length} rounds.`,
    '',
    '| origins in the group | take median (ms) | freeze median (ms) | writer stall median (ms) | stall p90 | stall ÷ one origin |',
    '| ---: | ---: | ---: | ---: | ---: | ---: |',
    ...([1, 2, 4] as const).map((n) => `| ${n} | ${f(median(g[n].take))} | ${f(median(g[n].freezeMs))} | ${f(median(g[n].stall))} | ${f(quantile(g[n].stall, 0.9))} | ${ratio(median(g[n].stall), median(g[1].stall))} |`),
  ];
}

/** The group snapshots' table and targets alone (DMSNAP_BENCH_ONLY=groups). */
export function groupReport(g: GroupResult): string {
  return [...groupTable(g, fmt, ratioOf), ''].join('\n');
}
