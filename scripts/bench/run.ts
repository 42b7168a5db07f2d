/**
 * The benchmark, run as root inside the VM test bed (npm run bench): six ways of taking
 * a snapshot of a mounted XFS, in alternation on the same loop devices, each watched by
 * an independent writer; then image throughput, CLI memory, listing and status rates.
 * Then origin write throughput under 0, 1 and 2 snapshots, dmsnap's (COW devices, COW
 * files) against LVM's (fio), an incremental image against a full one, the writer stall
 * of group snapshots, and `dmsnap monitor`'s CPU and memory while idle with 10 snapshots.
 * Prints markdown tables (scripts/bench/report.ts) and writes the raw numbers as JSON.
 * DMSNAP_BENCH_ONLY=groups, fio or monitor runs that part alone and writes no JSON.
 */
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { DeviceMapper, type Snapshot } from '../../lib';
import { copyDevice } from '../../lib/snapshot/image';
import { measureCowKinds } from './cow-kinds';
import { measureIncremental } from './incremental';
import { measureMonitorIdle } from './monitor-idle';
import { cowKindsReport, groupReport, monitorReport, report, type Samples } from './report';
import { loop, setupStacks, sh } from './setup';
import { StallWriter } from './stall-client';
import { measureGroups } from './group';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const now = () => performance.timeOrigin + performance.now();
// dist/scripts/bench → the package root
const project = join(__dirname, '../../..');
const CLI = join(project, 'dist/dmsnap.js');
const ROUNDS = Number(process.env.DMSNAP_BENCH_ROUNDS ?? 12);
const FIO_ROUNDS = Number(process.env.DMSNAP_BENCH_FIO_ROUNDS ?? 3);
const udev = process.env.DMSNAP_VM_UDEV === '1';

interface Contender {
  name: string;
  writer: StallWriter;
  take(): Promise<void>;
  drop?(): Promise<void>;
}



async function main(): Promise<void> {
  // The CLI's compile cache: the guest's /var is the host's, read-only; /run is the guest's own.
  process.env.DMSNAP_CACHE_DIR ??= '/run/dmsnap/cache';
  const work = mkdtempSync('/tmp/dmsnap-bench-');
  const dm = await DeviceMapper.open();
  const cleanups: (() => Promise<void> | void)[] = [];
  try {
    // DMSNAP_BENCH_ONLY=groups: the group snapshots alone (their table, no results file).
    if (process.env.DMSNAP_BENCH_ONLY === 'groups') {
      process.stdout.write(groupReport(await measureGroups(dm, work, loop, ROUNDS)));
      return;
    }
    // DMSNAP_BENCH_ONLY=monitor: the monitor's idle cost alone (its table, no results file).
    if (process.env.DMSNAP_BENCH_ONLY === 'monitor') {
      process.stdout.write(monitorReport(await measureMonitorIdle(dm, work, loop, CLI)));
      return;
    }
    const stacks = await setupStacks(dm, work, udev, cleanups);
    const { origin, dmDir, cow, lvmDir, lvmEnv, hostDir } = stacks;
    // DMSNAP_BENCH_ONLY=fio: origin writes under snapshots alone (their table, no results file).
    if (process.env.DMSNAP_BENCH_ONLY === 'fio') {
      process.stdout.write(cowKindsReport(await measureCowKinds(stacks, FIO_ROUNDS)));
      return;
    }

    const dmWriter = await StallWriter.start(join(dmDir, 'stall'));
    const lvmWriter = await StallWriter.start(join(lvmDir, 'stall'));
    cleanups.push(() => {
      dmWriter.stop();
      lvmWriter.stop();
    });

    let libSnap: Snapshot | undefined;
    const contenders: Contender[] = [
      {
        name: 'seed-dmsetup',
        writer: dmWriter,
        take: async () => void (await run(join(project, 'scripts/bench/seed-dmsetup.sh'), ['take', 'bench', 'bench-real', cow, '32'])),
        drop: async () => void (await run(join(project, 'scripts/bench/seed-dmsetup.sh'), ['drop', 'bench', 'bench-real'])),
      },
      {
        name: 'lvm',
        writer: lvmWriter,
        take: async () => void (await run('lvm', ['lvcreate', '-q', '-s', '-L', '128M', '-c', '16k', '-n', 'snap', 'benchvg/lv'], { env: { ...process.env, ...lvmEnv } })),
        drop: async () => void (await run('lvm', ['lvremove', '-q', '-f', 'benchvg/snap'], { env: { ...process.env, ...lvmEnv } })),
      },
      {
        name: 'dmsnap-lib',
        writer: dmWriter,
        take: async () => {
          libSnap = await origin.snapshot({ cow });
        },
        drop: async () => libSnap!.drop(),
      },
      {
        name: 'dmsnap-lib-cow-file',
        writer: dmWriter,
        take: async () => {
          libSnap = await origin.snapshot({ cowFile: { path: join(hostDir, 'bench.cow'), sizeBytes: 128 * MiB } });
        },
        drop: async () => libSnap!.drop(),
      },
      {
        name: 'dmsnap-cli',
        writer: dmWriter,
        take: async () => void (await run(process.execPath, [CLI, 'snapshot', 'bench', '--cow', cow, '-q'])),
        drop: async () => void (await run(process.execPath, [CLI, 'drop', 'bench', '-q'])),
      },
      {
        name: 'floor',
        writer: dmWriter,
        take: async () => {
          await dm.suspend('bench');
          await dm.resume('bench');
        },
      },
    ];

    const samples = new Map<string, Samples>(contenders.map((c) => [c.name, { take: [], drop: [], stall: [] }]));
    const freezeMs: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      // Rotate the order so no contender always follows the same one.
      for (let i = 0; i < contenders.length; i++) {
        const c = contenders[(round + i) % contenders.length];
        const s = samples.get(c.name)!;
        const from = now();
        await c.take();
        const to = now();
        s.take.push(to - from);
        s.stall.push(await c.writer.stall(from, to));
        if (c.name === 'dmsnap-lib') freezeMs.push(libSnap!.freezeMs!);
        if (c.drop) {
          await new Promise((r) => setTimeout(r, 200));
          const d0 = now();
          await c.drop();
          s.drop.push(now() - d0);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      process.stderr.write(`bench: round ${round + 1}/${ROUNDS}\n`);
    }

    // What any Node process costs here, under the same writers: the floor of dmsnap-cli.
    const nodeStartupMs: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = now();
      await run(process.execPath, ['-e', '0']);
      nodeStartupMs.push(now() - t);
    }

    // Image throughput: the same snapshot read by dd bs=1M and by dmsnap's copy.
    // Real data on the origin first (reading never-written blocks of a loop file is
    // cheaper than reading data); the writes after the snapshot stay far below the COW.
    sh('dd', ['if=/dev/urandom', `of=${join(dmDir, 'fill')}`, 'bs=1M', 'count=200', 'conv=fsync', 'status=none']);
    const snap = await origin.snapshot({ cow });
    cleanups.push(async () => {
      if (await dm.find(snap.name)) await snap.drop();
    });
    const throughput = { dd: [] as number[], dmsnapImage: [] as number[], createReadStream: [] as number[] };
    const dropCaches = () => writeFileSync('/proc/sys/vm/drop_caches', '3');
    for (let i = 0; i < 3; i++) {
      dropCaches();
      let t = now();
      sh('dd', [`if=${snap.devicePath}`, 'of=/dev/null', 'bs=1M', 'status=none']);
      throughput.dd.push(origin.sizeBytes / MiB / ((now() - t) / 1000));
      dropCaches();
      t = now();
      await copyDevice(snap.devicePath, origin.sizeBytes, new Writable({ write: (_c, _e, cb) => cb() }));
      throughput.dmsnapImage.push(origin.sizeBytes / MiB / ((now() - t) / 1000));
      dropCaches();
      t = now();
      await new Promise<void>((resolve, reject) =>
        snap.createReadStream().on('data', () => undefined).on('end', resolve).on('error', reject),
      );
      throughput.createReadStream.push(origin.sizeBytes / MiB / ((now() - t) / 1000));
    }

    // Status calls per second.
    let calls = 0;
    const until = now() + 2000;
    while (now() < until) {
      await snap.status();
      calls++;
    }
    const statusPerSecond = calls / 2;
    await snap.drop();

    // Origin writes under snapshots (fio), dmsnap against LVM, COW device against COW
    // file; the independent writers paused meanwhile, as when this part runs alone.
    dmWriter.pause();
    lvmWriter.pause();
    const cowKinds = await measureCowKinds(stacks, FIO_ROUNDS);
    dmWriter.resume();
    lvmWriter.resume();

    // Incremental against full image, on a 1 GiB origin of its own.
    // A failure here is reported and the other parts still run: their numbers are not lost.
    const incremental = await measureIncremental(dm, work, loop).catch((error: Error) => {
      process.stderr.write(`bench: the incremental part failed: ${error.message}\n`);
      return undefined;
    });

    // The writer stall of a group snapshot of 2 and of 4 origins, against one origin.
    const groups = await measureGroups(dm, work, loop, Math.max(4, Math.ceil(ROUNDS / 2)));

    // Peak memory of the CLI, as the kernel counts it for a child (getrusage).
    const peakRss = (args: string[]) =>
      Number(
        sh('python3', ['-c', 'import resource,subprocess,sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)', process.execPath, CLI, ...args]).trim(),
      ) / 1024;
    const cliRss = {
      status: peakRss(['status', '--json']),
      snapshot: peakRss(['snapshot', 'bench', '--cow', cow, '-q']),
      drop: peakRss(['drop', 'bench', '-q']),
    };

    // DeviceMapper.list() with 1,000 devices.
    const names = Array.from({ length: 1000 }, (_, i) => `bench-list-${String(i).padStart(4, '0')}`);
    for (const name of names) await dm.create(name);
    const listMs: number[] = [];
    for (let i = 0; i < 10; i++) {
      const t = now();
      const listed = await dm.list();
      listMs.push(now() - t);
      if (listed.length < 1000) throw new Error(`list() returned ${listed.length} devices`);
    }
    for (const name of names) await dm.remove(name);

    // The monitor's CPU and memory while idle with 10 snapshots.
    const monitorIdle = await measureMonitorIdle(dm, work, loop, CLI);

    const results = {
      date: new Date().toISOString(),
      machine: { kernel: sh('uname', ['-r']).trim(), udev, cpus: sh('nproc', []).trim(), emulation: 'QEMU TCG (-accel tcg -cpu max)' },
      rounds: ROUNDS,
      contenders: Object.fromEntries([...samples].map(([name, s]) => [name, s])),
      freezeMs,
      throughputMiBps: throughput,
      statusPerSecond,
      cliPeakRssMiB: cliRss,
      list1000Ms: listMs,
      nodeStartupMs,
      cowKinds,
      incremental,
      groups,
      monitorIdle,
    };
    if (process.env.DMSNAP_VM_SHARE) writeFileSync(join(process.env.DMSNAP_VM_SHARE, 'bench.json'), JSON.stringify(results, null, 2));
    process.stdout.write(report(results));
  } finally {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (error) {
        process.stderr.write(`bench: cleanup: ${(error as Error).message}\n`);
      }
    }
    dm.close();
    spawnSync('losetup', ['-D']);
    rmSync(work, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().catch((error: Error) => {
    process.stderr.write(`bench: ${error.stack ?? error.message}\n`);
    process.exitCode = 1;
  });
}
