/**
 * The COW safety check against the real addon and libblkid, on small images made with
 * the real tools in a temporary directory (blkid probes regular files as it probes block
 * devices). A case whose tool is not installed is skipped with the reason in its name;
 * .ci/run installs them all.
 */
import { execFileSync } from 'node:child_process';
import { accessSync, closeSync, constants as fsConstants, existsSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { DmsnapError, InvalidArgumentError, SyscallError } from '../../lib';
import { CowHasDataError, checkCowIsBlank, describeSignatures, probeSignatures, type DeviceSignature } from '../../lib/safety/signatures';
import { loadBinding } from '../../lib/native';
import { addonMissing } from '../support/addon';
import { createFakeSystem } from '../support/fake-binding';

const MiB = 1024 * 1024;
const SLOW = 60_000;

// mkfs and friends live in sbin, which a non-login PATH may lack.
const PATH = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/bin', '/bin'].filter(Boolean);

function findTool(name: string): string | undefined {
  for (const dir of PATH) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

function run(tool: string, args: string[], input?: string): string {
  const path = findTool(tool);
  if (!path) throw new Error(`${tool} is not installed`);
  return execFileSync(path, args, {
    input,
    encoding: 'utf8',
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, PATH: PATH.join(delimiter), LVM_SUPPRESS_FD_WARNINGS: '1' },
  });
}

/** `it` through the real addon, or `it.skip` with the reason (no addon, missing tools, or skipReason) in the test's name. */
function itWith(tools: string[], name: string, fn: () => Promise<void>, skipReason?: string): void {
  const missing = tools.filter((tool) => !findTool(tool));
  const reason = addonMissing ?? (missing.length > 0 ? `${missing.join(', ')} not installed` : skipReason);
  if (reason) it.skip(`${name} [skipped: ${reason}]`, fn);
  else it(name, fn, SLOW);
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'dmsnap-signatures-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

let counter = 0;
/** A sparse, all-zero image of the given size. */
function image(sizeBytes: number): string {
  const path = join(dir, `image-${++counter}.img`);
  closeSync(openSync(path, 'w'));
  truncateSync(path, sizeBytes);
  return path;
}

function writeAt(path: string, offset: number, data: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, data, 0, data.length, offset);
  } finally {
    closeSync(fd);
  }
}

/** struct disk_header of dm-snap-persistent.c: SNAP_MAGIC, valid, version 1, chunk_size. */
function snapshotHeader(magic = 0x70416e53): Buffer {
  const header = Buffer.alloc(16);
  header.writeUInt32LE(magic, 0);
  header.writeUInt32LE(1, 4);
  header.writeUInt32LE(1, 8);
  header.writeUInt32LE(32, 12);
  return header;
}

const MD_UUID = '00112233-4455-6677-8899-aabbccddeeff';

/**
 * An md RAID1 member superblock, version 1.2 (4 KiB from the start), as mdadm writes it:
 * mdadm --create needs the md driver, which the build machine may not have. Layout of
 * struct mdp_superblock_1 (include/uapi/linux/raid/md_p.h); checksum as the kernel's
 * calc_sb_1_csum: 32-bit little-endian words summed into 64 bits, then folded.
 */
function mdSuperblock(deviceSectors: number): Buffer {
  const roles = 2;
  const sb = Buffer.alloc(256 + 2 * roles);
  sb.writeUInt32LE(0xa92b4efc, 0); // magic
  sb.writeUInt32LE(1, 4); // major_version
  Buffer.from(MD_UUID.replace(/-/g, ''), 'hex').copy(sb, 16); // set_uuid
  sb.write('dmsnap-test:0', 32, 'utf8'); // set_name
  sb.writeBigUInt64LE(1_700_000_000n, 64); // ctime
  sb.writeUInt32LE(1, 72); // level: raid1
  const dataOffset = 2048;
  const dataSize = BigInt(deviceSectors - dataOffset);
  sb.writeBigUInt64LE(dataSize, 80); // size
  sb.writeUInt32LE(2, 92); // raid_disks
  sb.writeBigUInt64LE(BigInt(dataOffset), 128); // data_offset
  sb.writeBigUInt64LE(dataSize, 136); // data_size
  sb.writeBigUInt64LE(8n, 144); // super_offset: sector 8 = 4 KiB
  Buffer.from('ffeeddccbbaa99887766554433221100', 'hex').copy(sb, 168); // device_uuid
  sb.writeBigUInt64LE(1n, 200); // events
  sb.writeBigUInt64LE(0xffffffffffffffffn, 208); // resync_offset: in sync
  sb.writeUInt32LE(roles, 220); // max_dev
  sb.writeUInt16LE(0, 256); // this device: role 0
  sb.writeUInt16LE(0xffff, 258); // the other: missing
  let sum = 0n;
  for (let i = 0; i < sb.length; i += 4) sum += BigInt(sb.readUInt32LE(i));
  sb.writeUInt32LE(Number((sum & 0xffffffffn) + (sum >> 32n)) >>> 0, 216); // sb_csum
  return sb;
}

/** checkCowIsBlank's error, or a failure if it did not throw one. */
async function refusal(path: string): Promise<CowHasDataError> {
  try {
    await checkCowIsBlank(path);
  } catch (error) {
    expect(error).toBeInstanceOf(CowHasDataError);
    expect(error).toBeInstanceOf(DmsnapError);
    return error as CowHasDataError;
  }
  throw new Error(`checkCowIsBlank accepted ${path}`);
}

/** Probes, checks the refusal names what was found, and that force lets it through. */
async function expectRefused(path: string, expected: DeviceSignature[], message: RegExp): Promise<void> {
  const found = await probeSignatures(path);
  expect(found).toEqual(expected);
  const error = await refusal(path);
  expect(error.code).toBe('ERR_DMSNAP_COW_HAS_DATA');
  expect(error.path).toBe(path);
  expect(error.signatures).toEqual(expected.filter((s) => s.type !== 'dm-snapshot'));
  expect(error.message).toContain(`COW device ${path} holds `);
  expect(error.message).toMatch(message);
  expect(error.message).toMatch(/pass forceWipe \/ --force-wipe to overwrite it/);
  expect(await checkCowIsBlank(path, { force: true })).toEqual(expected);
}

const byOffset = (a: DeviceSignature, b: DeviceSignature) => a.offsetBytes - b.offsetBytes;

describe('probeSignatures and checkCowIsBlank on real images', () => {
  itWith([], 'finds nothing on an all-zero device and lets it through', async () => {
    const path = image(8 * MiB);
    expect(await probeSignatures(path)).toEqual([]);
    expect(await checkCowIsBlank(path)).toEqual([]);
  });

  itWith([], "reports an old COW's dm-snapshot header without refusing it", async () => {
    const path = image(8 * MiB);
    writeAt(path, 0, snapshotHeader());
    // libblkid's own name for it, which probeSignatures turns into dmsnap's.
    expect(await loadBinding().probeSignatures(path)).toEqual([{ type: 'DM_snapshot_cow', usage: 'other', label: '', uuid: '', offset: 0 }]);
    const header = { type: 'dm-snapshot', usage: 'snapshot-cow', offsetBytes: 0 };
    expect(await probeSignatures(path)).toEqual([header]);
    expect(await checkCowIsBlank(path)).toEqual([header]);
  });

  itWith([], 'reads the dm-snapshot magic little-endian', async () => {
    const path = image(8 * MiB);
    writeAt(path, 0, snapshotHeader(0x536e4170)); // "pAnS": the magic byte-swapped
    expect(await probeSignatures(path)).toEqual([]);
  });

  itWith([], 'does not mistake a file shorter than the header for anything', async () => {
    const path = image(3);
    expect(await probeSignatures(path)).toEqual([]);
  });

  itWith(['mkfs.ext4'], 'refuses an ext4 filesystem, naming its label, UUID and offset', async () => {
    const path = image(8 * MiB);
    run('mkfs.ext4', ['-q', '-F', '-L', 'home', '-U', '3f1e2d4c-5b6a-4978-8695-a4b3c2d1e0f9', path]);
    await expectRefused(
      path,
      [{ type: 'ext4', usage: 'filesystem', label: 'home', uuid: '3f1e2d4c-5b6a-4978-8695-a4b3c2d1e0f9', offsetBytes: 1080 }],
      /holds an ext4 filesystem \(label "home", UUID 3f1e2d4c-5b6a-4978-8695-a4b3c2d1e0f9\) at offset 1080; /,
    );
  });

  itWith(['mkfs.xfs'], 'refuses an XFS filesystem', async () => {
    const path = image(300 * MiB); // mkfs.xfs refuses anything smaller; the file stays sparse
    run('mkfs.xfs', ['-q', '-f', '-L', 'cow', '-m', 'uuid=7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d', path]);
    await expectRefused(
      path,
      [{ type: 'xfs', usage: 'filesystem', label: 'cow', uuid: '7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d', offsetBytes: 0 }],
      /an xfs filesystem \(label "cow", UUID 7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d\) at offset 0/,
    );
  });

  itWith(['mkfs.btrfs'], 'refuses a Btrfs filesystem', async () => {
    const path = image(128 * MiB); // above mkfs.btrfs's minimum
    run('mkfs.btrfs', ['-q', '-f', '-L', 'data', '-U', '2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901', path]);
    await expectRefused(
      path,
      [{ type: 'btrfs', usage: 'filesystem', label: 'data', uuid: '2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901', offsetBytes: 65600 }],
      /a btrfs filesystem \(label "data", UUID 2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901\) at offset 65600/,
    );
  });

  itWith(['mkswap'], 'refuses a swap area', async () => {
    const path = image(8 * MiB);
    // A fixed page size fixes the signature's place: the last 10 bytes of the first page.
    run('mkswap', ['-q', '-p', '4096', '-L', 'cowswap', '-U', '11111111-2222-4333-8444-555555555555', path]);
    await expectRefused(
      path,
      [{ type: 'swap', usage: 'other', label: 'cowswap', uuid: '11111111-2222-4333-8444-555555555555', offsetBytes: 4086 }],
      /a swap area \(label "cowswap", UUID 11111111-2222-4333-8444-555555555555\) at offset 4086/,
    );
  });

  itWith(['mkfs.vfat'], 'refuses a FAT filesystem, naming each of its magics once', async () => {
    const path = image(8 * MiB);
    run('mkfs.vfat', ['-n', 'HOME', '-i', '1234ABCD', path]);
    const fat = (offsetBytes: number): DeviceSignature => ({ type: 'vfat', usage: 'filesystem', label: 'HOME', uuid: '1234-ABCD', offsetBytes });
    const found = await probeSignatures(path);
    expect([...found].sort(byOffset)).toEqual([fat(0), fat(54), fat(510)]);
    const error = await refusal(path);
    expect(error.message).toMatch(/holds a vfat filesystem \(label "HOME", UUID 1234-ABCD\) at offsets \d+, \d+ and \d+; /);
    expect(await checkCowIsBlank(path, { force: true })).toEqual(found);
  });

  itWith(['sfdisk'], 'refuses an MBR partition table', async () => {
    const path = image(8 * MiB);
    run('sfdisk', ['-q', path], 'label: dos\nlabel-id: 0x1234abcd\ntype=83\n');
    await expectRefused(
      path,
      [{ type: 'dos', usage: 'partition_table', uuid: '1234abcd', offsetBytes: 510 }],
      /an MBR \(dos\) partition table \(UUID 1234abcd\) at offset 510/,
    );
  });

  itWith(['sfdisk'], 'refuses a GPT, its backup header and its protective MBR', async () => {
    const size = 8 * MiB;
    const path = image(size);
    run('sfdisk', ['-q', path], 'label: gpt\nlabel-id: 5A6B7C8D-1E2F-4A3B-8C4D-9E0F1A2B3C4D\ntype=linux\n');
    const gpt = (offsetBytes: number): DeviceSignature => ({
      type: 'gpt',
      usage: 'partition_table',
      uuid: '5a6b7c8d-1e2f-4a3b-8c4d-9e0f1a2b3c4d',
      offsetBytes,
    });
    await expectRefused(
      path,
      [gpt(512), gpt(size - 512), { type: 'PMBR', usage: 'partition_table', offsetBytes: 510 }],
      new RegExp(
        `a GPT partition table \\(gpt, UUID 5a6b7c8d-1e2f-4a3b-8c4d-9e0f1a2b3c4d\\) at offsets 512 and ${size - 512} ` +
          `and a GPT protective MBR \\(PMBR\\) at offset 510; `,
      ),
    );
  });

  itWith(['cryptsetup'], 'refuses a LUKS2 header and its second copy', async () => {
    const path = image(32 * MiB);
    const uuid = '8d3a1e2f-5b6c-4d7e-8f90-a1b2c3d4e5f6';
    run(
      'cryptsetup',
      ['luksFormat', '--batch-mode', '--type', 'luks2', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--label', 'cowtest', '--uuid', uuid, '--key-file=-', path],
      'not a real secret',
    );
    const luks = (offsetBytes: number): DeviceSignature => ({ type: 'crypto_LUKS', usage: 'crypto', label: 'cowtest', uuid, offsetBytes });
    await expectRefused(path, [luks(0), luks(16384)], /a LUKS encryption header \(crypto_LUKS, label "cowtest", UUID 8d3a1e2f-5b6c-4d7e-8f90-a1b2c3d4e5f6\) at offsets 0 and 16384/);
  });

  itWith([], 'refuses an md RAID member (1.2 superblock)', async () => {
    const size = 8 * MiB;
    const path = image(size);
    writeAt(path, 4096, mdSuperblock(size / 512));
    // mdadm itself must accept the hand-made superblock, checksum included (.ci/run
    // installs mdadm; without it only blkid judges the superblock).
    if (findTool('mdadm')) expect(run('mdadm', ['--examine', path])).toMatch(/Checksum : [0-9a-f]+ - correct/);
    await expectRefused(
      path,
      [{ type: 'linux_raid_member', usage: 'raid', label: 'dmsnap-test:0', uuid: MD_UUID, offsetBytes: 4096 }],
      /an md RAID member superblock \(linux_raid_member, label "dmsnap-test:0", UUID 00112233-4455-6677-8899-aabbccddeeff\) at offset 4096/,
    );
  });

  // pvcreate only writes to block devices: the image is attached to a loop device for it,
  // which needs root and the loop driver.
  const loopUsable = process.getuid?.() === 0 && existsSync('/dev/loop-control');
  itWith(['pvcreate', 'losetup'], 'refuses an LVM2 physical volume', async () => {
    const path = image(16 * MiB);
    const uuid = '0Y1cXb-aaaa-bbbb-cccc-dddd-eeee-ffffff';
    const loop = run('losetup', ['--find', '--show', path]).trim();
    try {
      const config =
        `devices { use_devicesfile = 0 hints = "none" obtain_device_list_from_udev = 0 filter = [ "a|^${loop}$|", "r|.*|" ] } ` +
        'activation { udev_sync = 0 udev_rules = 0 } backup { backup = 0 archive = 0 }';
      run('pvcreate', ['-qq', '--yes', '--norestorefile', '--uuid', uuid, '--config', config, loop]);
    } finally {
      run('losetup', ['-d', loop]);
    }
    await expectRefused(
      path,
      [{ type: 'LVM2_member', usage: 'raid', uuid, offsetBytes: 536 }],
      /an LVM2 physical volume \(LVM2_member, UUID 0Y1cXb-aaaa-bbbb-cccc-dddd-eeee-ffffff\) at offset 536/,
    );
  }, loopUsable ? undefined : 'pvcreate needs a block device: root and the loop driver');

  itWith(['make-bcache'], 'refuses a bcache backing device', async () => {
    const path = image(8 * MiB);
    run('make-bcache', ['-B', path]);
    const found = await probeSignatures(path);
    expect(found).toEqual([{ type: 'bcache', usage: 'other', uuid: expect.stringMatching(/^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$/), offsetBytes: 4120 }]);
    expect((await refusal(path)).message).toMatch(/holds a bcache superblock \(UUID [0-9a-f-]{36}\) at offset 4120; /);
  });

  itWith(['mkfs.xfs', 'mkfs.ext4'], 'reports every filesystem of an ambivalent device', async () => {
    // An XFS superblock in sector 0 and an ext4 one at 1024: blkid's own safe probe gives up
    // ("ambivalent result"); the check must name both.
    const xfs = image(300 * MiB);
    run('mkfs.xfs', ['-q', '-f', '-m', 'uuid=7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d', xfs]);
    const ext4 = image(8 * MiB);
    run('mkfs.ext4', ['-q', '-F', '-L', 'home', '-U', '3f1e2d4c-5b6a-4978-8695-a4b3c2d1e0f9', ext4]);
    writeAt(xfs, 1024, readFileSync(ext4).subarray(1024, 2048));
    await expectRefused(
      xfs,
      [
        { type: 'xfs', usage: 'filesystem', uuid: '7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d', offsetBytes: 0 },
        { type: 'ext4', usage: 'filesystem', label: 'home', uuid: '3f1e2d4c-5b6a-4978-8695-a4b3c2d1e0f9', offsetBytes: 1080 },
      ],
      /holds an xfs filesystem \(UUID 7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d\) at offset 0 and an ext4 filesystem \(label "home", UUID 3f1e2d4c-5b6a-4978-8695-a4b3c2d1e0f9\) at offset 1080; /,
    );
  });

  itWith(['mkfs.ext4', 'sfdisk'], 'reports a filesystem and a partition table together', async () => {
    const path = image(8 * MiB);
    run('mkfs.ext4', ['-q', '-F', '-L', 'home', '-U', '3f1e2d4c-5b6a-4978-8695-a4b3c2d1e0f9', path]);
    run('sfdisk', ['-q', '--wipe', 'never', path], 'label: dos\nlabel-id: 0x1234abcd\ntype=83\n');
    const found = await probeSignatures(path);
    expect(found.map((s) => [s.type, s.offsetBytes])).toEqual([
      ['ext4', 1080],
      ['dos', 510],
    ]);
    expect((await refusal(path)).message).toMatch(/an ext4 filesystem .* at offset 1080 and an MBR \(dos\) partition table \(UUID 1234abcd\) at offset 510; /);
  });

  itWith([], 'still refuses an old COW that became an md RAID member', async () => {
    // mdadm writes a 1.2 superblock at 4 KiB and leaves sector 0 alone: the "SnAp" of the
    // old COW survives, but the device now belongs to an array.
    const size = 8 * MiB;
    const path = image(size);
    writeAt(path, 0, snapshotHeader());
    writeAt(path, 4096, mdSuperblock(size / 512));
    const md: DeviceSignature = { type: 'linux_raid_member', usage: 'raid', label: 'dmsnap-test:0', uuid: MD_UUID, offsetBytes: 4096 };
    const header: DeviceSignature = { type: 'dm-snapshot', usage: 'snapshot-cow', offsetBytes: 0 };
    await expectRefused(path, [md, header], /holds an md RAID member superblock \(linux_raid_member, label "dmsnap-test:0", UUID [0-9a-f-]{36}\) at offset 4096; /);
    expect((await refusal(path)).message).not.toMatch(/dm-snapshot/);
  });

  itWith([], 'fails like the other native calls for a missing path or a character device', async () => {
    await expect(probeSignatures(join(dir, 'missing.img'))).rejects.toBeInstanceOf(SyscallError);
    await expect(checkCowIsBlank(join(dir, 'missing.img'))).rejects.toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'open', path: join(dir, 'missing.img') });
    await expect(checkCowIsBlank('/dev/null')).rejects.toMatchObject({ code: 'ENOTBLK', syscall: 'open', path: '/dev/null' });
  });

  it('checks its arguments before probing', async () => {
    await expect(probeSignatures('')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(probeSignatures(42 as unknown as string)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(checkCowIsBlank(image(MiB), { force: 'yes' as unknown as boolean })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
      message: 'options.force must be a boolean; got "yes"',
    });
  });
});

describe('with the fake binding', () => {
  it('refuses what the fake reports and passes a blank device', async () => {
    const system = createFakeSystem();
    const blank = system.addLoopDevice(4 * MiB);
    const used = system.addLoopDevice(4 * MiB);
    system.signatures.set(used, [{ type: 'ext4', usage: 'filesystem', label: '', uuid: 'u-1', offset: 1080 }]);
    const options = { binding: system.binding };
    expect(await checkCowIsBlank(blank, options)).toEqual([]);
    await expect(checkCowIsBlank(used, options)).rejects.toMatchObject({
      code: 'ERR_DMSNAP_COW_HAS_DATA',
      message: expect.stringContaining(`COW device ${used} holds an ext4 filesystem (UUID u-1) at offset 1080;`),
    });
    expect(await checkCowIsBlank(used, { ...options, force: true })).toEqual([{ type: 'ext4', usage: 'filesystem', uuid: 'u-1', offsetBytes: 1080 }]);
  });

  it("reports the header a persistent snapshot left on its COW until it is zeroed", async () => {
    const system = createFakeSystem();
    const disk = system.addLoopDevice(8 * MiB);
    const cow = system.addLoopDevice(4 * MiB);
    const control = await system.binding.openControl('/dev/mapper/control');
    try {
      await control.create('snap', '', 0);
      await control.load({ name: 'snap' }, [{ start: 0, length: 16384, type: 'snapshot', params: `${disk} ${cow} P 16` }], 0);
      await control.remove({ name: 'snap' }, 0, 0);
    } finally {
      control.close();
    }
    const options = { binding: system.binding };
    expect(await checkCowIsBlank(cow, options)).toEqual([{ type: 'dm-snapshot', usage: 'snapshot-cow', offsetBytes: 0 }]);
    system.zeroDevice(cow);
    expect(await checkCowIsBlank(cow, options)).toEqual([]);
  });

  it('fails as the addon does: ENOENT, ENOTBLK, EACCES', async () => {
    const system = createFakeSystem();
    const options = { binding: system.binding };
    await expect(probeSignatures('/dev/dmsnap-nothing', options)).rejects.toMatchObject({ code: 'ENOENT', syscall: 'open' });
    await expect(probeSignatures('/etc/passwd', options)).rejects.toMatchObject({ code: 'ENOTBLK' });
    system.unprivileged = true;
    await expect(probeSignatures(system.addLoopDevice(MiB), options)).rejects.toMatchObject({ code: 'EACCES' });
  });
});

describe('describeSignatures', () => {
  it('names each signature once, with its details and offsets', () => {
    expect(
      describeSignatures([
        { type: 'gpt', usage: 'partition_table', offsetBytes: 512 },
        { type: 'zfs_member', usage: 'filesystem', label: 'tank', offsetBytes: 8192 },
        { type: 'gpt', usage: 'partition_table', offsetBytes: 1024 },
        { type: 'udf', usage: 'filesystem', offsetBytes: 32768 },
      ]),
    ).toBe('a GPT partition table (gpt) at offsets 512 and 1024, a zfs_member filesystem (label "tank") at offset 8192 and a udf filesystem at offset 32768');
  });
});
