/**
 * The freeze needs no libuv thread-pool thread: an application whose file I/O on the
 * frozen filesystem fills the pool (4 threads by default) cannot keep the origin
 * suspended. Also reports how long the origin stays frozen.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs, mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DeviceMapper, openOrigin, prepare, type Snapshot } from '../../lib';
import { createLoopDevice, run } from './support/system';

const MiB = 1024 * 1024;
/** More concurrent writers than the pool has threads, whatever UV_THREADPOOL_SIZE is (up to 8). */
const WRITERS = 16;
const DEADLINE_MS = 20_000;

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** The dm-ioctl attributes dmsetup reports: "L-sw" live, "Ls-w" suspended... */
const attr = (name: string) => run('dmsetup', ['info', '-c', '--noheadings', '-o', 'attr', name]).trim();

describe('the freeze and the thread pool', () => {
  const name = `fpool${process.pid}`;
  let dm: DeviceMapper;
  let dir: string;

  beforeAll(async () => {
    dm = await DeviceMapper.open();
    await prepare(createLoopDevice(64 * MiB), { dm, name });
    run('mkfs.ext4', ['-q', `/dev/mapper/${name}`]);
    dir = mkdtempSync('/tmp/dmsnap-fpool-');
    run('mount', [`/dev/mapper/${name}`, dir]);
  });

  afterAll(async () => {
    run('umount', [dir]);
    run('e2fsck', ['-fn', `/dev/mapper/${name}`]);
    await (await openOrigin(name, { dm })).release();
    dm.close();
  });

  it('completes while writers on the frozen filesystem fill every pool thread, and the writes finish', async () => {
    const origin = await openOrigin(name, { dm });
    const cow = createLoopDevice(32 * MiB);
    let stop = false;
    let writes = 0;
    const last = new Map<string, string>();
    // Each writer rewrites and fsyncs its own file, back to back: while the origin is
    // suspended, every one of them blocks a pool thread in the kernel (sb_start_write).
    const writer = async (i: number) => {
      const file = join(dir, `w${i}`);
      while (!stop) {
        const data = randomBytes(16 * 1024);
        const handle = await fs.open(file, 'w');
        try {
          await handle.writeFile(data);
          await handle.sync();
        } finally {
          await handle.close();
        }
        last.set(file, sha(data));
        writes++;
      }
    };
    let writers: Promise<void>[] = [];
    const snapshotting = origin.snapshot({
      cow,
      // Started just before the freeze, so that they are queued while the origin is suspended.
      onStep: (step) => {
        if (step === 'load-origin-table') writers = Array.from({ length: WRITERS }, (_, i) => writer(i));
      },
    });
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      snapshotting.then((snap) => ({ snap })),
      new Promise<{ snap?: Snapshot }>((resolve) => (timer = setTimeout(() => resolve({}), DEADLINE_MS))),
    ]);
    clearTimeout(timer);
    let hung = '';
    if (!outcome.snap) {
      // The freeze is stuck: thaw the origin from outside (dmsetup holds no pool thread),
      // so that the writers and the queued freeze steps can run, and clean up.
      hung = `${name} still "${attr(name)}" after ${DEADLINE_MS} ms with ${writes} writes done`;
      spawnSync('dmsetup', ['resume', name]);
    }
    const snap = outcome.snap ?? (await snapshotting);
    const writesAtSnapshot = writes;
    await new Promise((r) => setTimeout(r, 200));
    stop = true;
    await Promise.all(writers);
    try {
      expect(hung).toBe('');
      expect(attr(name)).toMatch(/^L-/);
      expect((await snap.status()).state).toBe('active');
      // The writers went on after the freeze, and what they wrote last is on the origin.
      expect(writes).toBeGreaterThan(writesAtSnapshot);
      for (const [file, sum] of last) expect(sha(readFileSync(file))).toBe(sum);
      console.log(`freeze under ${WRITERS} pool-filling writers: ${snap.freezeMs!.toFixed(1)} ms, ${writes} writes`);
    } finally {
      await snap.drop();
    }
  }, 120_000);

  it('reports the freeze time of 20 snapshots of a mounted origin', async () => {
    const origin = await openOrigin(name, { dm });
    const cow = createLoopDevice(32 * MiB);
    const freezes: number[] = [];
    for (let i = 0; i < 20; i++) {
      const content = randomBytes(64 * 1024);
      await fs.writeFile(join(dir, `f${i}`), content);
      const snap = await origin.snapshot({ cow });
      freezes.push(snap.freezeMs!);
      expect((await snap.status()).state).toBe('active');
      await snap.drop();
      expect(sha(readFileSync(join(dir, `f${i}`)))).toBe(sha(content));
    }
    const sorted = [...freezes].sort((a, b) => a - b);
    for (const ms of freezes) expect(ms).toBeGreaterThan(0);
    console.log(`freezeMs over 20 snapshots: median ${sorted[10].toFixed(2)}, min ${sorted[0].toFixed(2)}, max ${sorted[19].toFixed(2)}`);
  }, 300_000);
});
