/**
 * The benchmark's comparison of the two ways to give a COW: a block device (here a loop
 * device over a file, as a spare partition would be) and a COW file dmsnap creates on
 * another filesystem and attaches to a loop device itself. Measured: origin write
 * throughput under a live snapshot with fio's 4 KiB random direct writes, against the
 * same writes with no snapshot (every first write to a chunk costs a copy to the COW).
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import type { Origin, SnapshotOptions } from '../../lib';

export interface FioResult {
  iops: number;
  MiBps: number;
  /** 99th percentile of the completion latency, in ms. */
  p99Ms: number;
}

export type CowKind = 'none' | 'cow-device' | 'cow-file' | 'cow-file-preallocated';

export interface CowKindsResult {
  fio: Record<CowKind, FioResult[]>;
  fioArgs: string[];
}

const FILE_MiB = 64;
const RUNTIME_S = Number(process.env.DMSNAP_BENCH_FIO_SECONDS ?? 8);

function fio(file: string, extra: string[]): FioResult {
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
    ...extra,
  ];
  const result = spawnSync('fio', args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`fio: ${result.stderr || result.error}`);
  const write = JSON.parse(result.stdout).jobs[0].write;
  const p99 = write.clat_ns?.percentile?.['99.000000'] ?? Number.NaN;
  return { iops: write.iops, MiBps: write.bw / 1024, p99Ms: p99 / 1e6 };
}

/**
 * For each round and each kind in turn: lay out a fresh 64 MiB file on the origin's
 * filesystem, take a snapshot with that kind of COW (none: no snapshot), run fio on the
 * file, drop the snapshot.
 */
export async function measureCowKinds(origin: Origin, mountDir: string, cowDevice: string, cowFileDir: string, rounds: number): Promise<CowKindsResult> {
  const file = join(mountDir, 'fio.dat');
  const kinds: [CowKind, SnapshotOptions | undefined][] = [
    ['none', undefined],
    ['cow-device', { cow: cowDevice }],
    ['cow-file', { cowFile: { path: join(cowFileDir, 'bench.cow'), sizeBytes: 128 * 1024 * 1024 } }],
    ['cow-file-preallocated', { cowFile: { path: join(cowFileDir, 'bench.cow'), sizeBytes: 128 * 1024 * 1024, preallocate: true } }],
  ];
  const out: Record<CowKind, FioResult[]> = { none: [], 'cow-device': [], 'cow-file': [], 'cow-file-preallocated': [] };
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < kinds.length; i++) {
      const [kind, options] = kinds[(round + i) % kinds.length];
      // Written in full before the snapshot, so that fio's writes overwrite data the snapshot holds.
      const layout = spawnSync('dd', ['if=/dev/zero', `of=${file}`, 'bs=1M', `count=${FILE_MiB}`, 'conv=fsync', 'status=none']);
      if (layout.status !== 0) throw new Error(`dd: ${layout.stderr}`);
      const snap = options ? await origin.snapshot(options) : undefined;
      try {
        out[kind].push(fio(file, []));
      } finally {
        await snap?.drop();
      }
    }
    process.stderr.write(`bench: fio round ${round + 1}/${rounds}\n`);
  }
  return { fio: out, fioArgs: [`randwrite bs=4k direct=1 psync size=${FILE_MiB}M runtime=${RUNTIME_S}s`] };
}
