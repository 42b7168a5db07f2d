import { report } from '../../scripts/bench/report';

const samples = (take: number, drop: number, stall: number) => ({ take: [take, take * 2, take], drop: [drop, drop, drop * 3], stall: [stall, stall, stall * 4] });

describe('benchmark report', () => {
  const results = {
    machine: { kernel: '6.1.0-56-amd64', udev: false, emulation: 'QEMU TCG' },
    rounds: 3,
    contenders: {
      'seed-dmsetup': samples(600, 500, 340),
      lvm: samples(700, 800, 41),
      'dmsnap-lib': samples(50, 40, 40),
      'dmsnap-cli': samples(400, 390, 42),
      floor: { take: [36, 36, 36], drop: [], stall: [36, 36, 37] },
    },
    freezeMs: [30, 31, 32],
    throughputMiBps: { dd: [100, 100, 100], dmsnapImage: [95, 95, 95], createReadStream: [80, 80, 80] },
    statusPerSecond: 1234,
    cliPeakRssMiB: { status: 50, snapshot: 52, drop: 51 },
    list1000Ms: [5, 6, 7],
  };
  const text = report(results);

  it('puts medians and ratios against seed-dmsetup and floor in their own columns', () => {
    expect(text).toContain('| dmsnap-lib | 50.0 | 90.0 | 40.0 | 104.0 | 40.0 | 136.0 | 0.08 | 0.12 | 1.11 |');
    expect(text).toContain('| floor | 36.0 | 36.0 | — | — | 36.0 | 36.8 | 0.06 | 0.11 | 1.00 |');
  });

  it('checks each target', () => {
    expect(text).toContain('- met: dmsnap-lib writer stall ≤ 1.25 × floor (1.11)');
    expect(text).toContain('- met: dmsnap-lib writer stall ≤ lvm (0.98)');
    expect(text).toContain('- met: dmsnap-lib take ≤ 1/10 of seed-dmsetup and lvm (0.08, 0.07)');
    expect(text).toContain('- met: dmsnap-cli take ≤ 0.8 × seed-dmsetup and lvm (0.67, 0.57)');
    expect(text).toContain('- met: image throughput ≥ 0.9 × dd bs=1M (0.95)');
    expect(text).toContain('- met: dmsnap-lib drop ≤ 1/10 of seed-dmsetup and lvm (0.08, 0.05)');
  });

  it('reports a missed target as MISSED', () => {
    const slow = report({ ...results, throughputMiBps: { ...results.throughputMiBps, dmsnapImage: [50, 50, 50] } });
    expect(slow).toContain('- MISSED: image throughput ≥ 0.9 × dd bs=1M (0.50)');
  });

  it('compares origin writes with a COW file and with a COW device', () => {
    const fio = (iops: number) => ({ iops, MiBps: (iops * 4) / 1024, p99Ms: 2 });
    const withKinds = report({
      ...results,
      contenders: { ...results.contenders, 'dmsnap-lib-cow-file': samples(60, 45, 44) },
      cowKinds: {
        fio: {
          none: [fio(2000), fio(2100)],
          'cow-device': [fio(1000), fio(1000)],
          'cow-device-2': [fio(800)],
          'cow-file': [fio(700), fio(700)],
          'cow-file-preallocated': [fio(900)],
          'lvm-none': [fio(2000)],
          'lvm-1': [fio(1100)],
          'lvm-2': [fio(700)],
        },
        fioArgs: ['randwrite bs=4k'],
        chunkKiB: 16,
      },
    });
    expect(withKinds).toContain('| dmsnap | 1 | COW device (loop over a file) | 1000.0 | 3.9 | 2.00 | 0.49 | 0.91 |');
    expect(withKinds).toContain('| dmsnap | 1 | preallocated COW file on ext4 | 900.0 | 3.5 | 2.00 | 0.44 | 0.82 |');
    expect(withKinds).toContain('| LVM | 2 | snapshot LVs in the VG | 700.0 | 2.7 | 2.00 | 0.35 | — |');
    expect(withKinds).toContain('- MISSED: origin writes under 1 dmsnap snapshot (COW device) ≥ under 1 LVM snapshot, IOPS (0.91;');
    expect(withKinds).toContain('- met: origin writes under 2 dmsnap snapshots (COW devices) ≥ under 2 LVM snapshots, IOPS (1.14;');
    expect(withKinds).toContain('- met: writer stall with a COW file ≤ 1.25 × with a COW device (1.10)');
  });

  it("reports dmsnap monitor's CPU and memory while idle, against its targets", () => {
    const monitorIdle = { snapshots: 10, intervalS: 2, settleS: 5, sampleS: 30, cpuSeconds: 0.15, cpuPercent: 0.5, rssMiB: [50, 52, 61], hwmMiB: 62, watched: 10, otherMessages: [], exitCode: 0, exitSignal: null, exitMs: 120 };
    const text = report({ ...results, monitorIdle });
    expect(text).toContain('| CPU, user + system | 0.50 % of a core (0.15 s in 30 s) |');
    expect(text).toContain('| RSS (VmRSS), median / max over the window | 52.0 / 61.0 MiB |');
    expect(text).toContain('- met: dmsnap monitor idle with 10 snapshots < 1 % of a core (0.50 %)');
    expect(text).toContain('- MISSED: dmsnap monitor idle with 10 snapshots < 60 MiB RSS (61.0 MiB at most)');
    expect(text).toContain('- met: SIGTERM ends dmsnap monitor with exit status 0 (0)');
  });

  it('compares an incremental image with a full one', () => {
    const MiB = 1024 * 1024;
    const text = report({
      ...results,
      incremental: {
        originBytes: 1024 * MiB,
        changedBytes: 10 * MiB,
        full: { bytesRead: 1024 * MiB, ms: 20000 },
        incremental: { bytesRead: 12 * MiB, ms: 2500, extents: 160, bytesCopied: 10 * MiB },
        imageMatches: true,
      },
    });
    expect(text).toContain('- met: incremental image reads ≥ 20× fewer bytes than a full one (85.33×)');
    expect(text).toContain('- MISSED: incremental image takes ≥ 10× less time than a full one (8.00×)');
    expect(text).toContain('| incremental --update (160 extents, 10.0 MiB copied) | 12.0 | 2500.0 |');
  });
  it('compares the writer stall of group snapshots with one origin\'s', () => {
    const g = (stall: number) => ({ take: [stall * 4, stall * 4], stall: [stall, stall + 2], freezeMs: [stall / 2, stall / 2] });
    const text = report({ ...results, groups: { 1: g(40), 2: g(50), 4: g(60) } });
    expect(text).toContain('- met: writer stall of a group of 2 ≤ 1.3 × one origin\'s (1.24)');
    expect(text).toContain('- MISSED: writer stall of a group of 4 ≤ 1.3 × one origin\'s (1.49)');
    expect(text).toContain('| 4 | 240.0 | 30.0 | 61.0 | 61.8 | 1.49 |');
  });
});
