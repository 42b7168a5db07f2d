/**
 * 60 snapshot/status/drop cycles through the library (40 in the secondary cells of the
 * VM matrix), under a writer that never stops: the filesystem stays sound, and no device,
 * node or file descriptor leaks.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DeviceMapper, openOrigin, prepare } from '../../lib';
import { cellRole, createLoopDevice, run } from './support/system';
import { checkLog } from './support/writer';

const MiB = 1024 * 1024;
const CYCLES = cellRole === 'primary' ? 60 : 40;

describe('soak', () => {
  const name = `soak${process.pid}`;
  let dm: DeviceMapper;
  let dir: string;
  let writer: ChildProcess;
  let writerExited: Promise<void>;
  const SLOTS = 4096;

  beforeAll(async () => {
    dm = await DeviceMapper.open();
    const disk = createLoopDevice(320 * MiB);
    await prepare(disk, { dm, name });
    run('mkfs.xfs', ['-q', '-f', `/dev/mapper/${name}`]);
    dir = mkdtempSync('/tmp/dmsnap-soak-');
    run('mount', [`/dev/mapper/${name}`, dir]);
    mkdirSync(join(dir, 'w'));
    // A ring of 16 MiB: it never fills the filesystem, however long the soak runs.
    writer = spawn(process.execPath, [join(__dirname, 'support/writer.js'), join(dir, 'w', 'log'), String(SLOTS)], { stdio: ['ignore', 'pipe', 'inherit'] });
    writerExited = new Promise<void>((resolve) => writer.on('exit', () => resolve()));
    for (let i = 0; i < 600 && !(existsSync(join(dir, 'w', 'log')) && statSync(join(dir, 'w', 'log')).size > 0); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  afterAll(async () => {
    if (writer.exitCode === null) writer.kill('SIGKILL');
    run('umount', [dir]);
    await (await openOrigin(name, { dm })).release();
    dm.close();
  });

  it(`runs ${CYCLES} cycles without leaks, and the filesystem checks clean`, async () => {
    const cow = createLoopDevice(64 * MiB);
    const origin = await openOrigin(name, { dm });
    const freezes: number[] = [];
    const nodesBefore = readdirSync('/dev/mapper').sort();
    // Counted after a first cycle: the first use opens what stays open (the addon, the
    // control node); a leak grows with the cycles.
    let fdsBefore: string[] = [];
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      if (cycle === 1) fdsBefore = openDescriptors();
      const snap = await origin.snapshot({ cow });
      freezes.push(snap.freezeMs!);
      expect((await snap.status()).state).toBe('active');
      await snap.drop();
    }
    // No more descriptors than after the first cycle; if there are, the failure lists the new ones.
    const fdsAfter = openDescriptors();
    expect(fdsAfter.length <= fdsBefore.length ? [] : fdsAfter.filter((fd) => !fdsBefore.includes(fd))).toEqual([]);
    expect(readdirSync('/dev/mapper').sort()).toEqual(nodesBefore);
    expect((await dm.list()).filter((d) => d.name.startsWith(name)).map((d) => d.name).sort()).toEqual([name, `${name}-real`]);
    expect(await dm.table(name)).toEqual(await dm.table(`${name}-real`));

    expect(writer.exitCode).toBeNull(); // still writing after all the cycles
    writer.kill('SIGTERM');
    await writerExited;
    const records = checkLog(readFileSync(join(dir, 'w', 'log')), SLOTS);
    expect(records).toBeGreaterThan(0);
    run('umount', [dir]);
    run('xfs_repair', ['-n', `/dev/mapper/${name}`]);
    run('mount', [`/dev/mapper/${name}`, dir]);
    const sorted = [...freezes].sort((a, b) => a - b);
    console.log(`soak: ${CYCLES} cycles, ${records} records written meanwhile, freeze median ${sorted[CYCLES >> 1].toFixed(1)} ms, max ${sorted.at(-1)!.toFixed(1)} ms`);
  }, 1_800_000);
});

/** This process's open descriptors, as "fd -> target". */
function openDescriptors(): string[] {
  return readdirSync('/proc/self/fd').flatMap((fd) => {
    try {
      return [`${fd} -> ${readlinkSync(`/proc/self/fd/${fd}`)}`];
    } catch {
      return []; // the descriptor readdir itself used
    }
  });
}
