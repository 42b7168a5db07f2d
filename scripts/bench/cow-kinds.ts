/**
 * The benchmark's origin writes under live snapshots: fio's 4 KiB random direct writes on
 * a file of the origin's XFS, with no snapshot, with one and two snapshots, for dmsnap and
 * for LVM on an equivalent LV (same size, same filesystem, same chunk size, same file laid
 * out the same way), and for dmsnap the two ways to give a COW: a block device (here a
 * loop device over a file, as a spare partition would be) and a COW file dmsnap creates
 * on another filesystem and attaches to a loop device itself. Every first write to a chunk
 * after a snapshot costs a copy to each snapshot's COW.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import type { Snapshot } from '../../lib';
import type { Stacks } from './setup';

export interface FioResult {
  iops: number;
  MiBps: number;
  /** 99th percentile of the completion latency, in ms. */
  p99Ms: number;
}

/** dmsnap's kinds, then LVM's (lvm-N: N snapshots of the LV). */
export const COW_KINDS = ['none', 'cow-device', 'cow-device-2', 'cow-file', 'cow-file-preallocated', 'lvm-none', 'lvm-1', 'lvm-2'] as const;
export type CowKind = (typeof COW_KINDS)[number];

export interface CowKindsResult {
  fio: Partial<Record<CowKind, FioResult[]>>;
  fioArgs: string[];
  /** The chunk size of every snapshot, dmsnap's and LVM's, in KiB. */
  chunkKiB?: number;
}

const MiB = 1024 * 1024;
const FILE_MiB = 64;
const RUNTIME_S = Number(process.env.DMSNAP_BENCH_FIO_SECONDS ?? 8);
/** dmsnap's default chunk (32 sectors, lib/snapshot/origin.ts), given explicitly; LVM's -c the same. */
const CHUNK_SECTORS = 32;
const CHUNK_KiB = CHUNK_SECTORS / 2;
const COW_MiB = 128;

function fio(file: string): FioResult {
  const args = [
    '--name=randwrite',
    `--filename=${file}`,
    '--rw=randwrite',
    '--bs=4k',
    '--direct=1',
    '--ioengine=psync',
    `--size=${FILE_MiB}M`,
    `--runtime=${RUNTIME_S}`,
    '--time_based',
    '--randrepeat=0',
    '--output-format=json',
  ];
  const result = spawnSync('fio', args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`fio: ${result.stderr || result.error}`);
  const write = JSON.parse(result.stdout).jobs[0].write;
  const p99 = write.clat_ns?.percentile?.['99.000000'] ?? Number.NaN;
  return { iops: write.iops, MiBps: write.bw / 1024, p99Ms: p99 / 1e6 };
}

/** One kind: the mount point fio writes in, and what takes its snapshots (returning what drops them). */
interface Kind {
  dir: string;
  take(): Promise<() => Promise<void>>;
}

function kinds(s: Stacks): Record<CowKind, Kind> {
  const chunkSectors = CHUNK_SECTORS;
  const cowFile = (preallocate: boolean) => ({ path: join(s.hostDir, 'bench.cow'), sizeBytes: COW_MiB * MiB, preallocate });
  const dmsnap = (...takes: (() => Promise<Snapshot>)[]): Kind => ({
    dir: s.dmDir,
    take: async () => {
      const snaps: Snapshot[] = [];
      for (const take of takes) snaps.push(await take());
      return async () => {
        for (const snap of snaps.reverse()) await snap.drop();
      };
    },
  });
  const lvm = (n: number): Kind => ({
    dir: s.lvmDir,
    take: async () => {
      const names = Array.from({ length: n }, (_, i) => `fiosnap${i + 1}`);
      for (const name of names) s.lvm('lvcreate', '-q', '-s', '-L', `${COW_MiB}M`, '-c', `${CHUNK_KiB}k`, '-n', name, 'benchvg/lv');
      return async () => {
        for (const name of names.reverse()) s.lvm('lvremove', '-q', '-f', `benchvg/${name}`);
      };
    },
  });
  return {
    none: dmsnap(),
    'cow-device': dmsnap(() => s.origin.snapshot({ cow: s.cow, chunkSectors })),
    'cow-device-2': dmsnap(
      () => s.origin.snapshot({ cow: s.cow, chunkSectors }),
      () => s.origin.snapshot({ cow: s.cow2, chunkSectors, name: 'bench-snap2' }),
    ),
    'cow-file': dmsnap(() => s.origin.snapshot({ cowFile: cowFile(false), chunkSectors })),
    'cow-file-preallocated': dmsnap(() => s.origin.snapshot({ cowFile: cowFile(true), chunkSectors })),
    'lvm-none': lvm(0),
    'lvm-1': lvm(1),
    'lvm-2': lvm(2),
  };
}

/**
 * For each round and each kind in turn (the order rotated every round): lay out a fresh
 * 64 MiB file on the kind's filesystem, take its snapshots (none: no snapshot), run fio
 * on the file, drop the snapshots.
 */
export async function measureCowKinds(stacks: Stacks, rounds: number): Promise<CowKindsResult> {
  const all = kinds(stacks);
  const out: Partial<Record<CowKind, FioResult[]>> = Object.fromEntries(COW_KINDS.map((kind) => [kind, []]));
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < COW_KINDS.length; i++) {
      const kind = COW_KINDS[(round + i) % COW_KINDS.length];
      const file = join(all[kind].dir, 'fio.dat');
      // Written in full before the snapshot, so that fio's writes overwrite data the snapshots hold.
      const layout = spawnSync('dd', ['if=/dev/zero', `of=${file}`, 'bs=1M', `count=${FILE_MiB}`, 'conv=fsync', 'status=none']);
      if (layout.status !== 0) throw new Error(`dd: ${layout.stderr}`);
      const drop = await all[kind].take();
      try {
        out[kind]!.push(fio(file));
      } finally {
        await drop();
      }
    }
    process.stderr.write(`bench: fio round ${round + 1}/${rounds}\n`);
  }
  return { fio: out, fioArgs: [`randwrite bs=4k direct=1 psync size=${FILE_MiB}M runtime=${RUNTIME_S}s`], chunkKiB: CHUNK_KiB };
}
