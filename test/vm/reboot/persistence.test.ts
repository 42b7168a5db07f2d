/**
 * What a persistent snapshot's COW holds after a power cut: the kernel facts that
 * re-attaching snapshots at boot rests on. Runs over two boots of one guest with the same
 * two virtio disks (scripts/test-vm.sh runs the boots, DMSNAP_VM_BOOT says which):
 *
 *   boot 1  dmsnap prepares /dev/vda (ext4, files), takes a snapshot with its COW on
 *           /dev/vdb, writes more (synced, then more still in the page cache), records
 *           the snapshot's checksum in the share, and cuts the power (sysrq "b");
 *   boot 2  the stack built again as a re-attach would (NAME-real, the snapshot over the
 *           same COW with P and no zeroing, NAME on snapshot-origin): the snapshot reads
 *           exactly as at its freeze and copy-on-write goes on; then the origin written
 *           while the COW was not attached, and the COW attached again: the snapshot no
 *           longer reads as at its freeze and the kernel does not notice — so a COW whose
 *           origin was written without it must be refused, never attached.
 */
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { deviceSha } from '../support/model';
import { cli, dmsetup, run } from '../support/system';

const BOOT = process.env.DMSNAP_VM_BOOT;
const SHARE = process.env.DMSNAP_VM_SHARE ?? '/run/vm-share';
const ORIGIN_DISK = '/dev/vda';
const COW_DISK = '/dev/vdb';
const NAME = 'persist';
const CHUNK_SECTORS = 32;
const MiB = 1024 * 1024;

interface Record1 {
  snapshotSha: string;
  allocatedAtSync: number;
}

function writeDirect(device: string, offsetMiB: number, countMiB: number): void {
  run('dd', ['if=/dev/urandom', `of=${device}`, 'bs=1M', `seek=${offsetMiB}`, `count=${countMiB}`, 'oflag=direct', 'conv=notrunc', 'status=none']);
}

/** The snapshot target's allocated sectors, from its status line. */
function allocated(name: string): number {
  const match = /snapshot (\d+)\/\d+ \d+$/.exec(dmsetup('status', name).trim());
  if (!match) throw new Error(`${name} reports no usage: ${dmsetup('status', name)}`);
  return Number(match[1]);
}

/** NAME-real, the snapshot over the COW (its store read back, not zeroed), NAME on snapshot-origin. */
function attachByHand(): void {
  const size = run('blockdev', ['--getsz', ORIGIN_DISK]).trim();
  // Without udev, dmsetup leaves each /dev/mapper node to be made.
  const create = (name: string, args: string[]) => {
    run('dmsetup', ['create', name, ...args]);
    run('dmsetup', ['mknodes', name]);
  };
  create(`${NAME}-real`, ['--table', `0 ${size} linear ${ORIGIN_DISK} 0`]);
  create(`${NAME}-snap`, ['--readonly', '--table', `0 ${size} snapshot /dev/mapper/${NAME}-real ${COW_DISK} P ${CHUNK_SECTORS}`]);
  create(NAME, ['--table', `0 ${size} snapshot-origin /dev/mapper/${NAME}-real`]);
}

function detachByHand(): void {
  for (const name of [NAME, `${NAME}-snap`, `${NAME}-real`]) run('dmsetup', ['remove', '--retry', name]);
}

const boot1 = BOOT === '1' ? it : it.skip;
const boot2 = BOOT === '2' ? it : it.skip;

describe('a persistent COW across a power cut', () => {
  boot1('boot 1: a snapshot on its own disk, origin writes after it, then the power is cut', async () => {
    expect(cli(['prepare', ORIGIN_DISK, '--name', NAME]).status).toBe(0);
    const origin = `/dev/mapper/${NAME}`;
    run('mkfs.ext4', ['-q', '-F', origin]);
    const dir = mkdtempSync('/tmp/persist-');
    run('mount', [origin, dir]);
    for (let i = 0; i < 16; i++) writeFileSync(join(dir, `file-${i}`), randomBytes(512 * 1024));
    run('sync', []);
    expect(cli(['snapshot', NAME, '--cow', COW_DISK, '--chunk-size', String(CHUNK_SECTORS), '-q'])).toMatchObject({ status: 0, stderr: '' });
    const snapshotSha = deviceSha(`${origin}-snap`);
    // Written and synced: these exceptions are committed.
    for (let i = 0; i < 8; i++) writeFileSync(join(dir, `file-${i}`), randomBytes(512 * 1024));
    for (let i = 0; i < 4; i++) writeFileSync(join(dir, `new-${i}`), randomBytes(MiB));
    run('sync', []);
    const record: Record1 = { snapshotSha, allocatedAtSync: allocated(`${NAME}-snap`) };
    writeFileSync(join(SHARE, 'boot1.json'), JSON.stringify(record));
    // Still in the page cache, or on its way, when the power goes.
    for (let i = 0; i < 4; i++) writeFileSync(join(dir, `late-${i}`), randomBytes(MiB));
    writeFileSync(join(SHARE, 'power-cut'), 'boot 1 of the persistence test');
    writeFileSync('/proc/sys/kernel/sysrq', '1');
    writeFileSync('/proc/sysrq-trigger', 'b');
    await new Promise((resolve) => setTimeout(resolve, 60_000));
    throw new Error('the power cut did not happen');
  }, 120_000);

  boot2('boot 2: re-attached, the snapshot reads as at its freeze and goes on; after origin writes without it, it silently does not', () => {
    const record = JSON.parse(readFileSync(join(SHARE, 'boot1.json'), 'utf8')) as Record1;
    attachByHand();
    try {
      expect(allocated(`${NAME}-snap`)).toBeGreaterThanOrEqual(record.allocatedAtSync);
      expect(deviceSha(`/dev/mapper/${NAME}-snap`)).toBe(record.snapshotSha);
      // Copy-on-write goes on: the origin written through snapshot-origin, the snapshot unchanged.
      writeDirect(`/dev/mapper/${NAME}`, 40, 8);
      expect(deviceSha(`/dev/mapper/${NAME}-snap`)).toBe(record.snapshotSha);
    } finally {
      detachByHand();
    }
    // The origin written while its COW is not attached (as a boot that mounted it without
    // dmsnap would): attached again, the kernel accepts the COW, and the snapshot reads wrong.
    writeDirect(ORIGIN_DISK, 64, 8);
    attachByHand();
    try {
      expect(dmsetup('status', `${NAME}-snap`)).not.toMatch(/Invalid/);
      expect(deviceSha(`/dev/mapper/${NAME}-snap`)).not.toBe(record.snapshotSha);
    } finally {
      detachByHand();
    }
  });
});
