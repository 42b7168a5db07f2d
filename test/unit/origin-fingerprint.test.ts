/**
 * The origin fingerprint on synthetic images: what a read-write mount of each filesystem
 * changes changes the fingerprint, and nothing else does. The VM tests prove it on real
 * filesystems across a reboot.
 */
import { fingerprintOrigin } from '../../lib/targets/origin-fingerprint';

const MiB = 1024 * 1024;

function reader(image: Buffer) {
  const reads: [number, number][] = [];
  const read = async (offset: number, length: number) => {
    if (offset % 4096 !== 0 || length % 4096 !== 0) throw new Error(`unaligned read ${offset}+${length}`);
    reads.push([offset, length]);
    return Buffer.from(image.subarray(offset, offset + length));
  };
  return { read, reads };
}

const fingerprint = (image: Buffer) => fingerprintOrigin(reader(image).read, image.length);

function ext4Image(): Buffer {
  const image = Buffer.alloc(4 * MiB);
  image.writeUInt16LE(0xef53, 1024 + 56);
  image.writeUInt32LE(7, 1024 + 52); // s_mnt_count, s_max_mnt_count area
  return image;
}

/** An XFS of 4 KiB blocks, 4 AGs of 256 blocks (agblklog 8), its 64-block log at fsblock (1 << 8) + 16. */
function xfsImage(headBB: number): Buffer {
  const image = Buffer.alloc(4 * MiB);
  image.writeUInt32BE(0x58465342, 0);
  image.writeUInt32BE(4096, 4);
  image.writeBigUInt64BE(BigInt((1 << 8) + 16), 48);
  image.writeUInt32BE(256, 84);
  image.writeUInt32BE(4, 88);
  image.writeUInt32BE(64, 96);
  image.writeUInt8(8, 124);
  const logOffset = (256 + 16) * 4096;
  for (let bb = 0; bb < 64 * 8; bb++) writeLogBlock(image, logOffset, bb, bb < headBB ? 2 : 1, bb % 16 === 0);
  return image;
}

function writeLogBlock(image: Buffer, logOffset: number, bb: number, cycle: number, header: boolean): void {
  const at = logOffset + bb * 512;
  if (header) {
    image.writeUInt32BE(0xfeedbabe, at);
    image.writeUInt32BE(cycle, at + 4);
  } else {
    image.writeUInt32BE(cycle, at);
  }
  image.writeUInt32BE(bb * 7 + cycle, at + 100);
}

describe('the origin fingerprint', () => {
  it('of ext4 is its superblock: a mount that raises the mount count changes it, data does not', async () => {
    const image = ext4Image();
    const before = await fingerprint(image);
    expect(before).toMatchObject({ fs: 'ext4', digest: expect.stringMatching(/^[0-9a-f]{64}$/) });
    image.fill(0xaa, 2 * MiB, 2 * MiB + 4096);
    expect(await fingerprint(image)).toEqual(before);
    image.writeUInt16LE(8, 1024 + 52);
    expect((await fingerprint(image))!.digest).not.toBe(before!.digest);
  });

  it('of XFS follows the log head: any logged write moves it, and the last records are hashed', async () => {
    const image = xfsImage(200);
    const before = await fingerprint(image);
    expect(before).toMatchObject({ fs: 'xfs' });
    // Data blocks outside the log and superblock: no change.
    image.fill(0xaa, 3 * MiB, 3 * MiB + 4096);
    expect(await fingerprint(image)).toEqual(before);
    expect(await fingerprint(xfsImage(200))).toEqual(before);
    // One more log block written at the head, in the current cycle.
    const logOffset = (256 + 16) * 4096;
    writeLogBlock(image, logOffset, 200, 2, false);
    const after = await fingerprint(image);
    expect(after!.digest).not.toBe(before!.digest);
    // A record before the head rewritten (a torn write, a different history).
    const other = xfsImage(200);
    other.writeUInt32BE(12345, logOffset + 150 * 512 + 100);
    expect((await fingerprint(other))!.digest).not.toBe(before!.digest);
  });

  it('of XFS sees a log that wrapped: block 0 in a new cycle', async () => {
    const full = xfsImage(64 * 8);
    const before = await fingerprint(full);
    writeLogBlock(full, (256 + 16) * 4096, 0, 3, true);
    expect((await fingerprint(full))!.digest).not.toBe(before!.digest);
  });

  it('finds the XFS head with a few reads, not the whole log', async () => {
    const image = xfsImage(321);
    const { read, reads } = reader(image);
    await fingerprintOrigin(read, image.length);
    expect(reads.length).toBeLessThan(20);
  });

  it('of btrfs is its primary superblock', async () => {
    const image = Buffer.alloc(4 * MiB);
    image.write('_BHRfS_M', 64 * 1024 + 64, 'latin1');
    const before = await fingerprint(image);
    expect(before).toMatchObject({ fs: 'btrfs' });
    image.writeBigUInt64LE(10n, 64 * 1024 + 72); // generation
    expect((await fingerprint(image))!.digest).not.toBe(before!.digest);
  });

  it('is undefined for anything else: no filesystem, an XFS with an external log, a tiny device', async () => {
    expect(await fingerprint(Buffer.alloc(4 * MiB))).toBeUndefined();
    const external = xfsImage(10);
    external.writeBigUInt64BE(0n, 48);
    expect(await fingerprint(external)).toBeUndefined();
    expect(await fingerprintOrigin(reader(ext4Image()).read, 64 * 1024)).toBeUndefined();
  });
});
