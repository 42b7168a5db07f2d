/**
 * The writer stall of a group snapshot (npm run bench): four XFS origins, each with an
 * independent writer, all writing all the time; in alternation, a snapshot of one origin,
 * a group of 2 and a group of 4. A group's stall is the worst of its members' writers: the
 * longest any of its applications waited. The goal: a group's stall ≤ 1.3 × one origin's.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { prepare, snapshotGroup, type DeviceMapper, type Origin } from '../../lib';
import { StallWriter } from './stall-client';

const MiB = 1024 * 1024;
const now = () => performance.timeOrigin + performance.now();
/** The group sizes measured. */
export const GROUP_SIZES = [1, 2, 4] as const;

/** Per group size: the group snapshot's time and its worst writer stall, in ms, per round. */
export type GroupResult = Record<(typeof GROUP_SIZES)[number], { take: number[]; stall: number[]; freezeMs: number[] }>;

function sh(program: string, args: string[]): void {
  const result = spawnSync(program, args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${program} ${args.join(' ')}: ${result.stderr || result.error}`);
}

export async function measureGroups(dm: DeviceMapper, work: string, loop: (dir: string, name: string, sizeBytes: number) => string, rounds: number): Promise<GroupResult> {
  const origins: Origin[] = [];
  const writers: StallWriter[] = [];
  const cows: string[] = [];
  const dirs: string[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      const origin = await prepare(loop(work, `group${i}.img`, 320 * MiB), { dm, name: `bench-g${i}` });
      origins.push(origin);
      sh('mkfs.xfs', ['-q', '-f', origin.devicePath]);
      const dir = join(work, `group${i}`);
      mkdirSync(dir);
      sh('mount', [origin.devicePath, dir]);
      dirs.push(dir);
      cows.push(loop(work, `group-cow${i}.img`, 64 * MiB));
    }
    for (const dir of dirs) writers.push(await StallWriter.start(join(dir, 'stall')));
    const result = Object.fromEntries(GROUP_SIZES.map((n) => [n, { take: [], stall: [], freezeMs: [] }])) as unknown as GroupResult;
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < GROUP_SIZES.length; i++) {
        const n = GROUP_SIZES[(round + i) % GROUP_SIZES.length];
        const from = now();
        const snaps = await snapshotGroup(origins.slice(0, n).map((origin, j) => ({ origin, cow: cows[j] })));
        const to = now();
        const stalls = await Promise.all(writers.slice(0, n).map((w) => w.stall(from, to)));
        result[n].take.push(to - from);
        result[n].stall.push(Math.max(...stalls));
        result[n].freezeMs.push(snaps[0].freezeMs!);
        await new Promise((r) => setTimeout(r, 200));
        for (const snap of snaps) await snap.drop();
        await new Promise((r) => setTimeout(r, 200));
      }
      process.stderr.write(`bench: group round ${round + 1}/${rounds}\n`);
    }
    return result;
  } finally {
    for (const writer of writers) writer.stop();
    for (const dir of dirs) spawnSync('umount', [dir]);
    for (const origin of origins) await origin.release().catch(() => undefined);
  }
}
