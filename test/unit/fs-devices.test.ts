import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { btrfsMembers, filesystemDevices, mountSourceOf } from '../../lib/system/fs-devices';

const mountinfo = [
  '22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw',
  '40 22 0:45 / /srv rw,relatime shared:20 - btrfs /dev/mapper/data rw,space_cache=v2',
  '41 22 0:45 /sub /mnt/sub rw,relatime shared:21 - btrfs /dev/mapper/data rw',
  '42 22 0:46 / /mnt/with\\040space rw - btrfs /dev/odd\\040name rw',
  '43 22 0:30 / /run rw,nosuid shared:5 - tmpfs tmpfs rw,size=100k',
].join('\n');

describe('mount sources of anonymous device numbers', () => {
  it('finds the mount with the longest mount point that holds a path', () => {
    expect(mountSourceOf('/srv/a/b', mountinfo)).toEqual({ fsType: 'btrfs', source: '/dev/mapper/data' });
    expect(mountSourceOf('/srv', mountinfo)).toEqual({ fsType: 'btrfs', source: '/dev/mapper/data' });
    expect(mountSourceOf('/mnt/sub/x', mountinfo)).toEqual({ fsType: 'btrfs', source: '/dev/mapper/data' });
    expect(mountSourceOf('/run/lock', mountinfo)).toEqual({ fsType: 'tmpfs', source: 'tmpfs' });
    expect(mountSourceOf('/srvx', mountinfo)).toEqual({ fsType: 'ext4', source: '/dev/vda1' });
    expect(mountSourceOf('/x', '')).toBeUndefined();
  });

  it('takes the last of mounts on the same point (the one on top)', () => {
    const stacked = `${mountinfo}\n50 43 0:50 / /run rw - ramfs none rw`;
    expect(mountSourceOf('/run/x', stacked)).toEqual({ fsType: 'ramfs', source: 'none' });
  });

  it('unescapes octal escapes in mount points and sources', () => {
    expect(mountSourceOf('/mnt/with space/f', mountinfo)?.source).toBe('/dev/odd name');
  });

  it('gives a block-backed st_dev as it is, and no device for tmpfs', () => {
    expect(filesystemDevices({ major: 254, minor: 1 }, '/', { mountinfo })).toEqual([{ major: 254, minor: 1 }]);
    expect(filesystemDevices({ major: 0, minor: 30 }, '/run', { mountinfo: mountinfo.replace(' /run ', ' / ') })).toEqual([]);
    expect(filesystemDevices({ major: 0, minor: 99 }, '/nonexistent-dir', { mountinfo })).toEqual([]);
  });
});

describe('btrfs members', () => {
  let sysfs: string;
  beforeAll(() => {
    sysfs = mkdtempSync(join(tmpdir(), 'dmsnap-sysfs-'));
    const member = (fsid: string, name: string, dev: string) => {
      mkdirSync(join(sysfs, 'fs/btrfs', fsid, 'devices', name), { recursive: true });
      writeFileSync(join(sysfs, 'fs/btrfs', fsid, 'devices', name, 'dev'), `${dev}\n`);
    };
    member('aaaa-1', 'loop3', '7:3');
    member('bbbb-2', 'dm-4', '253:4');
    member('bbbb-2', 'loop5', '7:5');
    mkdirSync(join(sysfs, 'fs/btrfs/features'), { recursive: true });
  });
  afterAll(() => rmSync(sysfs, { recursive: true, force: true }));

  it('lists every device of the filesystem one member belongs to', () => {
    expect(btrfsMembers({ major: 7, minor: 5 }, sysfs)).toEqual(expect.arrayContaining([{ major: 253, minor: 4 }, { major: 7, minor: 5 }]));
    expect(btrfsMembers({ major: 7, minor: 5 }, sysfs)).toHaveLength(2);
    expect(btrfsMembers({ major: 7, minor: 3 }, sysfs)).toEqual([{ major: 7, minor: 3 }]);
  });

  it('falls back to the member itself when sysfs does not know it', () => {
    expect(btrfsMembers({ major: 8, minor: 1 }, sysfs)).toEqual([{ major: 8, minor: 1 }]);
    expect(btrfsMembers({ major: 8, minor: 1 }, join(sysfs, 'none'))).toEqual([{ major: 8, minor: 1 }]);
  });
});
