import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectFilesystem, mountPlan, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY } from '../../lib/snapshot/filesystem';

const dir = mkdtempSync(join(tmpdir(), 'dmsnap-fs-'));

function image(name: string, fill: (b: Buffer) => void): string {
  const buffer = Buffer.alloc(0x10048 + 512);
  fill(buffer);
  const path = join(dir, name);
  writeFileSync(path, buffer);
  return path;
}

describe('filesystem detection', () => {
  it.each([
    ['xfs', (b: Buffer) => b.write('XFSB', 0, 'latin1')],
    ['ext4', (b: Buffer) => { b.writeUInt16LE(0xef53, 1080); b.writeUInt32LE(0x40, 1024 + 96); }],
    ['ext3', (b: Buffer) => { b.writeUInt16LE(0xef53, 1080); b.writeUInt32LE(0x4, 1024 + 92); }],
    ['ext2', (b: Buffer) => b.writeUInt16LE(0xef53, 1080)],
    ['btrfs', (b: Buffer) => b.write('_BHRfS_M', 0x10040, 'latin1')],
  ] as const)('recognises %s from its superblock', async (type, fill) => {
    expect(await detectFilesystem(image(type, fill))).toBe(type);
  });

  it('knows nothing on a blank device', async () => {
    expect(await detectFilesystem(image('blank', () => undefined))).toBeUndefined();
  });
});

describe('mount plans for a frozen copy', () => {
  const readOnly = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
  it('mounts XFS with nouuid and ext4 without journal replay, read-only', () => {
    expect(mountPlan('xfs', '/dev/x')).toEqual({ fstype: 'xfs', flags: readOnly, data: 'nouuid' });
    expect(mountPlan('ext4', '/dev/x')).toEqual({ fstype: 'ext4', flags: readOnly, data: 'noload' });
  });

  it('refuses Btrfs and unknown contents with a plain message', () => {
    expect(() => mountPlan('btrfs', '/dev/x')).toThrow(expect.objectContaining({ code: 'ERR_DMSNAP_UNSAFE_FILESYSTEM', message: expect.stringMatching(/same fsid/) }));
    expect(() => mountPlan(undefined, '/dev/x')).toThrow(expect.objectContaining({ code: 'ERR_DMSNAP_UNKNOWN_FILESYSTEM' }));
  });
});
