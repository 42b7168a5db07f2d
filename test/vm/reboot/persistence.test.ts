/**
 * Snapshots across a reboot: `dmsnap detach` at shutdown, `dmsnap prepare --attach` at the
 * next boot. Runs over two boots of one guest with the same twelve virtio disks
 * (scripts/test-vm.sh runs the boots, DMSNAP_VM_BOOT says which):
 *
 *   boot 1  A: ext4 on vda, its snapshot on vdb; B: XFS on vdc, its snapshot on vdd; both
 *           written after the snapshot, unmounted and detached (sealed). D: ext4 on vdg,
 *           its snapshot on vdh (slowed down by dm-delay), rolled back without --wait and
 *           detached in the middle of the merge; F: the same on vdi and vdj, its merge
 *           running at the power cut. E: ext4 on vdk, its snapshot on vdl, rolled back
 *           with --at-boot while mounted and written, then detached. C: ext4 on vde,
 *           its snapshot on vdf, still attached, written (synced, then more in the page
 *           cache) when the power is cut (sysrq "b");
 *   boot 2  A and B attached again: each snapshot reads exactly as at its freeze and
 *           copy-on-write goes on; detached again, each filesystem mounted read-write
 *           without dmsnap and written: attaching is refused, nothing attached, the COW
 *           untouched. D's merge resumes at the attach and ends with the snapshot's
 *           content; so does F's, whose merge ran when the power was cut (the device is
 *           half merged: no filesystem to protect). E's rollback starts at the attach
 *           and ends with the snapshot's content. C is refused (never detached cleanly), though the kernel itself
 *           would take its COW back (attached by hand, it reads as at its freeze): dmsnap
 *           cannot prove the origin unwritten after a crash.
 */
import { closeSync, fsyncSync, mkdtempSync, openSync, readdirSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { deviceSha } from '../support/model';
import { invariantViolations } from '../support/invariants';
import { cli, dmsetup, run } from '../support/system';

const BOOT = process.env.DMSNAP_VM_BOOT;
const SHARE = process.env.DMSNAP_VM_SHARE ?? '/run/vm-share';
const CHUNK_SECTORS = 32;

interface Pair {
  name: string;
  origin: string;
  cow: string;
  mkfs: string[];
}

const A: Pair = { name: 'pa', origin: '/dev/vda', cow: '/dev/vdb', mkfs: ['mkfs.ext4', '-q', '-F'] };
const B: Pair = { name: 'pb', origin: '/dev/vdc', cow: '/dev/vdd', mkfs: ['mkfs.xfs', '-q', '-f'] };
const C: Pair = { name: 'pc', origin: '/dev/vde', cow: '/dev/vdf', mkfs: ['mkfs.ext4', '-q', '-F'] };
const D: Pair = { name: 'pd', origin: '/dev/vdg', cow: '/dev/vdh', mkfs: ['mkfs.ext4', '-q', '-F'] };
const F: Pair = { name: 'pf', origin: '/dev/vdi', cow: '/dev/vdj', mkfs: ['mkfs.ext4', '-q', '-F'] };
const E: Pair = { name: 'pe', origin: '/dev/vdk', cow: '/dev/vdl', mkfs: ['mkfs.ext4', '-q', '-F'] };
const MiB = 1024 * 1024;

type Record1 = Record<string, { snapshotSha: string }>;

function mounted<T>(device: string, fn: (dir: string) => T): T {
  const dir = mkdtempSync('/tmp/persist-');
  run('mount', [device, dir]);
  try {
    return fn(dir);
  } finally {
    run('umount', [dir]);
  }
}

function writeFiles(dir: string, prefix: string, count: number): void {
  for (let i = 0; i < count; i++) writeFileSync(join(dir, `${prefix}-${i}`), randomBytes(512 * 1024));
}

/** prepare, mkfs, files, a snapshot, more files written after it; the snapshot's checksum. */
function snapshotWithChanges(pair: Pair): string {
  expect(cli(['prepare', pair.origin, '--name', pair.name, '-q']).status).toBe(0);
  const device = `/dev/mapper/${pair.name}`;
  run(pair.mkfs[0], [...pair.mkfs.slice(1), device]);
  mounted(device, (dir) => writeFiles(dir, 'before', 16));
  expect(cli(['snapshot', pair.name, '--cow', pair.cow, '--chunk-size', String(CHUNK_SECTORS), '-q'])).toMatchObject({ status: 0, stderr: '' });
  const sha = deviceSha(`${device}-snap`);
  mounted(device, (dir) => writeFiles(dir, 'after', 8));
  return sha;
}

/** 4 KiB of random data at the start of every other 32 KiB chunk from 4 MiB on: chunks that merge one by one. */
function writeScattered(device: string, count: number): void {
  const fd = openSync(device, 'r+');
  try {
    for (let i = 0; i < count; i++) writeSync(fd, randomBytes(4096), 0, 4096, 4 * MiB + i * 64 * 1024);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The sectors of data a merge has left to copy, from NAME's snapshot-merge status. */
function mergeLeft(name: string): number {
  const match = /snapshot-merge (\d+)\/\d+ (\d+)$/.exec(dmsetup('status', name).trim());
  if (!match) throw new Error(`${name} runs no merge: ${dmsetup('status', name)}`);
  return Number(match[1]) - Number(match[2]);
}

/** A snapshot on a slowed-down COW (dm-delay), changes, and a rollback started: its merge runs. */
async function mergeRunning(pair: Pair): Promise<string> {
  expect(cli(['prepare', pair.origin, '--name', pair.name, '-q']).status).toBe(0);
  const device = `/dev/mapper/${pair.name}`;
  run('mkfs.ext4', ['-q', '-F', device]);
  const size = run('blockdev', ['--getsz', pair.cow]).trim();
  run('dmsetup', ['create', `${pair.name}-slow`, '--table', `0 ${size} delay ${pair.cow} 0 100`]);
  run('dmsetup', ['mknodes', `${pair.name}-slow`]);
  expect(cli(['snapshot', pair.name, '--cow', `/dev/mapper/${pair.name}-slow`, '--chunk-size', '32k', '-q'])).toMatchObject({ status: 0, stderr: '' });
  const sha = deviceSha(`${device}-snap`);
  writeScattered(device, 400);
  expect(cli(['rollback', pair.name, '-q'])).toMatchObject({ status: 0, stderr: '' });
  await new Promise((resolve) => setTimeout(resolve, 2000));
  expect(mergeLeft(pair.name)).toBeGreaterThan(0);
  return sha;
}

/** D: rolled back, and detached while the merge runs. */
async function detachMidMerge(): Promise<string> {
  const sha = await mergeRunning(D);
  // The COW is named as sysfs names the delay device (/dev/dm-N).
  expect(cli(['detach', D.name])).toMatchObject({ status: 0, stdout: expect.stringMatching(new RegExp(`^${D.name}-snap /dev/\\S+ merging\n$`)) });
  run('dmsetup', ['remove', `${D.name}-slow`]);
  return sha;
}

/** E: a rollback recorded for the next boot while the filesystem is mounted (and written on), then detached. */
function rollbackAtBoot(): string {
  const sha = snapshotWithChanges(E);
  mounted(`/dev/mapper/${E.name}`, (dir) => {
    expect(cli(['rollback', E.name]).status).toBe(4);
    expect(cli(['rollback', E.name, '--at-boot'])).toMatchObject({ status: 0, stdout: '' });
    // What is written after the request is rolled back too.
    writeFiles(dir, 'recorded', 2);
  });
  expect(cli(['status', E.name]).stdout).toMatch(new RegExp(`^${E.name} .* rollback to ${E.name}-snap at the next boot$`, 'm'));
  expect(cli(['detach', E.name])).toMatchObject({ status: 0, stdout: `${E.name}-snap ${E.cow} active\n`, stderr: expect.stringMatching(/rolls pe back to pe-snap/) });
  return sha;
}

function attach(pair: Pair) {
  return cli(['prepare', pair.origin, '--name', pair.name, '--attach', pair.cow]);
}

const boot1 = BOOT === '1' ? it : it.skip;
const boot2 = BOOT === '2' ? it : it.skip;

describe('snapshots across a reboot', () => {
  boot1('boot 1: two origins detached cleanly, a third attached when the power is cut', async () => {
    const record: Record1 = {};
    record[D.name] = { snapshotSha: await detachMidMerge() };
    for (const pair of [A, B]) {
      record[pair.name] = { snapshotSha: snapshotWithChanges(pair) };
      const detached = cli(['detach', pair.name]);
      expect(detached).toMatchObject({ status: 0, stdout: `${pair.name}-snap ${pair.cow} active\n` });
    }
    record[E.name] = { snapshotSha: rollbackAtBoot() };
    // F: a merge still running when the power goes.
    record[F.name] = { snapshotSha: await mergeRunning(F) };
    record[C.name] = { snapshotSha: snapshotWithChanges(C) };
    const dir = mkdtempSync('/tmp/persist-');
    run('mount', [`/dev/mapper/${C.name}`, dir]);
    writeFiles(dir, 'synced', 4);
    run('sync', []);
    writeFileSync(join(SHARE, 'boot1.json'), JSON.stringify(record));
    // Still in the page cache, or on its way, when the power goes.
    writeFiles(dir, 'late', 4);
    writeFileSync(join(SHARE, 'power-cut'), 'boot 1 of the persistence test');
    writeFileSync('/proc/sys/kernel/sysrq', '1');
    writeFileSync('/proc/sysrq-trigger', 'b');
    await new Promise((resolve) => setTimeout(resolve, 60_000));
    throw new Error('the power cut did not happen');
  }, 300_000);

  boot2('boot 2: detached cleanly, the snapshots come back as at their freeze; written without dmsnap, or after a crash, they are refused', () => {
    const record = JSON.parse(readFileSync(join(SHARE, 'boot1.json'), 'utf8')) as Record1;
    for (const pair of [A, B]) {
      const attached = attach(pair);
      expect(attached).toMatchObject({ status: 0, stdout: `/dev/mapper/${pair.name}\n`, stderr: `dmsnap prepare: attached snapshot ${pair.name}-snap from ${pair.cow}\n` });
      const snapshot = `/dev/mapper/${pair.name}-snap`;
      expect(deviceSha(snapshot)).toBe(record[pair.name].snapshotSha);
      // Copy-on-write goes on: the filesystem written through the origin, the snapshot unchanged.
      mounted(`/dev/mapper/${pair.name}`, (dir) => writeFiles(dir, 'boot2', 8));
      expect(deviceSha(snapshot)).toBe(record[pair.name].snapshotSha);
      expect(invariantViolations()).toEqual([]);
      expect(cli(['detach', pair.name]).status).toBe(0);
      // A boot without dmsnap: the filesystem mounted on the bare device and written.
      mounted(pair.origin, (dir) => writeFiles(dir, 'without-dmsnap', 1));
      const label = run('dd', [`if=${pair.cow}`, 'bs=8k', 'count=1', 'iflag=direct', 'status=none']);
      const refused = attach(pair);
      expect(refused.status).toBe(0);
      expect(refused.stderr).toMatch(new RegExp(`refused the COW ${pair.cow}: the origin was written since snapshot ${pair.name}-snap was detached`));
      expect(dmsetup('ls')).not.toContain(`${pair.name}-snap`);
      expect(run('dd', [`if=${pair.cow}`, 'bs=8k', 'count=1', 'iflag=direct', 'status=none'])).toBe(label);
      expect(cli(['release', pair.name]).status).toBe(0);
    }
    // The merge a detach interrupted resumes before anything mounts, and ends as it should.
    const resumed = attach(D);
    expect(resumed).toMatchObject({ status: 0, stderr: `dmsnap prepare: resumed the rollback to snapshot ${D.name}-snap from ${D.cow}\n` });
    expect(dmsetup('table', D.name)).toMatch(/ snapshot-merge /);
    expect(cli(['rollback', D.name, '--wait', '-q'])).toMatchObject({ status: 0, stderr: '' });
    expect(dmsetup('table', D.name)).toBe(dmsetup('table', `${D.name}-real`));
    expect(deviceSha(`/dev/mapper/${D.name}`)).toBe(record[D.name].snapshotSha);
    run('e2fsck', ['-fn', `/dev/mapper/${D.name}`]);
    expect(dmsetup('ls')).not.toContain(`${D.name}-snap-cow`);
    expect(invariantViolations()).toEqual([]);
    expect(cli(['release', D.name]).status).toBe(0);

    // The rollback recorded with --at-boot starts before anything mounts, and ends as it should.
    expect(attach(E)).toMatchObject({ status: 0, stderr: `dmsnap prepare: started the rollback recorded with --at-boot to snapshot ${E.name}-snap from ${E.cow}\n` });
    expect(dmsetup('table', E.name)).toMatch(/ snapshot-merge /);
    expect(cli(['rollback', E.name, '--wait', '-q'])).toMatchObject({ status: 0, stderr: '' });
    expect(deviceSha(`/dev/mapper/${E.name}`)).toBe(record[E.name].snapshotSha);
    run('e2fsck', ['-fn', `/dev/mapper/${E.name}`]);
    mounted(`/dev/mapper/${E.name}`, (dir) => expect(readdirSync(dir).filter((f) => !f.startsWith('before-')).sort()).toEqual(['lost+found']));
    expect(invariantViolations()).toEqual([]);
    expect(cli(['release', E.name]).status).toBe(0);

    // A merge the power cut interrupted resumes too (a half-merged device is no filesystem), with a warning.
    const afterCrash = attach(F);
    expect(afterCrash.status).toBe(0);
    expect(afterCrash.stderr).toMatch(new RegExp(`resumed the rollback to snapshot ${F.name}-snap from ${F.cow}\n.*warning: .*interrupted by a crash`));
    expect(cli(['rollback', F.name, '--wait', '-q'])).toMatchObject({ status: 0, stderr: '' });
    expect(deviceSha(`/dev/mapper/${F.name}`)).toBe(record[F.name].snapshotSha);
    run('e2fsck', ['-fn', `/dev/mapper/${F.name}`]);
    expect(cli(['release', F.name]).status).toBe(0);

    // After a power cut, nothing proves the origin unwritten: refused...
    const crashed = attach(C);
    expect(crashed.stderr).toMatch(new RegExp(`refused the COW ${C.cow}: ${C.name} was not detached cleanly`));
    expect(cli(['release', C.name]).status).toBe(0);
    // ... though the kernel takes the store back, past the label, as it was at the freeze.
    const size = run('blockdev', ['--getsz', C.origin]).trim();
    const cowSize = Number(run('blockdev', ['--getsz', C.cow]).trim());
    const create = (name: string, table: string, readOnly = false) => {
      run('dmsetup', ['create', name, ...(readOnly ? ['--readonly'] : []), '--table', table]);
      run('dmsetup', ['mknodes', name]);
    };
    create('byhand-cow', `0 ${cowSize - 128} linear ${C.cow} 128`);
    create('byhand-snap', `0 ${size} snapshot ${C.origin} /dev/mapper/byhand-cow P ${CHUNK_SECTORS}`, true);
    try {
      expect(dmsetup('status', 'byhand-snap')).not.toMatch(/Invalid/);
      expect(deviceSha('/dev/mapper/byhand-snap')).toBe(record[C.name].snapshotSha);
    } finally {
      for (const name of ['byhand-snap', 'byhand-cow']) run('dmsetup', ['remove', '--retry', name]);
    }
  }, 600_000);
});
