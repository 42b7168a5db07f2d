/**
 * The benchmark's test bed (scripts/bench/run.ts): loop devices, dmsnap's origin with XFS,
 * LVM's equivalent LV with XFS, the COW devices and the ext4 that holds COW files.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { prepare, type DeviceMapper, type Origin } from '../../lib';

const MiB = 1024 * 1024;

export function sh(program: string, args: string[], env?: NodeJS.ProcessEnv): string {
  const result = spawnSync(program, args, { encoding: 'utf8', env: { ...process.env, ...env } });
  if (result.status !== 0) throw new Error(`${program} ${args.join(' ')}: ${result.stderr || result.error}`);
  return result.stdout;
}

/** A loop device over a new sparse file of sizeBytes in dir. */
export function loop(dir: string, name: string, sizeBytes: number): string {
  const file = join(dir, name);
  writeFileSync(file, '');
  truncateSync(file, sizeBytes);
  return sh('losetup', ['--find', '--show', file]).trim();
}

export type Cleanup = () => Promise<void> | void;

/** What the benchmark's contenders and fio runs work on. */
export interface Stacks {
  /** dmsnap's origin "bench" (XFS on 512 MiB), mounted at dmDir. */
  origin: Origin;
  dmDir: string;
  /** COW devices of 128 MiB: the contenders' and, for two snapshots at once, a second one. */
  cow: string;
  cow2: string;
  /** LVM's equivalent: benchvg/lv (XFS on 512 MiB), mounted at lvmDir; room for two 128 MiB snapshots. */
  lvmDir: string;
  lvmEnv: NodeJS.ProcessEnv;
  lvm: (...args: string[]) => string;
  /** ext4 on a device of its own, for COW files. */
  hostDir: string;
}

/** Sets up the stacks; what undoes each step is pushed on cleanups (run in reverse). */
export async function setupStacks(dm: DeviceMapper, work: string, udev: boolean, cleanups: Cleanup[]): Promise<Stacks> {
  // dmsnap's origin (also used by the seed script and the floor): XFS on 512 MiB.
  const originDisk = loop(work, 'origin.img', 512 * MiB);
  const cow = loop(work, 'cow.img', 128 * MiB);
  const cow2 = loop(work, 'cow2.img', 128 * MiB);
  const origin: Origin = await prepare(originDisk, { dm, name: 'bench' });
  sh('mkfs.xfs', ['-q', '-f', origin.devicePath]);
  const dmDir = join(work, 'dm');
  mkdirSync(dmDir);
  sh('mount', [origin.devicePath, dmDir]);
  cleanups.push(async () => {
    sh('umount', [dmDir]);
    await origin.release();
  });

  // LVM's equivalent: a 512 MiB LV with XFS, snapshots of 128 MiB (two at once: 768 MiB
  // of extents, and LVM's metadata).
  const lvmDisk = loop(work, 'lvm.img', 832 * MiB);
  const lvmConf = join(work, 'lvm');
  mkdirSync(lvmConf);
  writeFileSync(
    join(lvmConf, 'lvm.conf'),
    `devices { filter = [ "a|^${lvmDisk}$|", "r|.*|" ] use_devicesfile = 0 obtain_device_list_from_udev = 0 }
activation { udev_sync = ${udev ? 1 : 0} udev_rules = ${udev ? 1 : 0} monitoring = 0 }
backup { backup = 0 archive = 0 }
global { locking_dir = "/run/lock/lvm" }
`,
  );
  const lvmEnv = { LVM_SYSTEM_DIR: lvmConf, LVM_SUPPRESS_FD_WARNINGS: '1' };
  const lvm = (...args: string[]) => sh('lvm', args, lvmEnv);
  lvm('pvcreate', '-q', lvmDisk);
  lvm('vgcreate', '-q', 'benchvg', lvmDisk);
  lvm('lvcreate', '-q', '-y', '-Zn', '-L', '512M', '-n', 'lv', 'benchvg');
  if (!udev) sh('dmsetup', ['mknodes']);
  sh('mkfs.xfs', ['-q', '-f', '/dev/mapper/benchvg-lv']);
  const lvmDir = join(work, 'lvm-mnt');
  mkdirSync(lvmDir);
  sh('mount', ['/dev/mapper/benchvg-lv', lvmDir]);
  cleanups.push(() => {
    sh('umount', [lvmDir]);
    lvm('vgremove', '-q', '-f', 'benchvg');
    lvm('pvremove', '-q', lvmDisk);
  });

  // The filesystem that holds COW files: ext4 on a loop device of its own.
  const hostDisk = loop(work, 'cow-host.img', 384 * MiB);
  sh('mkfs.ext4', ['-q', '-F', hostDisk]);
  const hostDir = join(work, 'cow-host');
  mkdirSync(hostDir);
  sh('mount', [hostDisk, hostDir]);
  cleanups.push(() => void sh('umount', [hostDir]));

  return { origin, dmDir, cow, cow2, lvmDir, lvmEnv, lvm, hostDir };
}
