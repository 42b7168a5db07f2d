/**
 * A fingerprint of what a filesystem writes whenever it is mounted read-write, so that a
 * snapshot detached from its origin (a reboot) is re-attached only if the origin was not
 * written meanwhile: the kernel would accept the COW and the snapshot would read wrong.
 * Sealed in the COW's label when dmsnap detaches the origin cleanly, compared at the next
 * attach. What each filesystem gives away:
 *
 *   ext2/3/4  the superblock (1 KiB at byte 1024): a read-write mount raises the mount
 *             count and mount time and clears the clean flag at once, before any write
 *   XFS       the superblock (sector 0) and the internal log's head: every change is logged
 *             first, and each log block carries the cycle it was written in, so the head
 *             (where cycle C ends and C-1 begins) moves with any logged write; the blocks
 *             before the head (the last records, the unmount record) are hashed too
 *   btrfs     the primary superblock (4 KiB at 64 KiB): its generation rises with every
 *             commit, and a tree-log fsync writes it too
 *
 * Anything else (another filesystem, an XFS with its log on another device, no filesystem)
 * has no fingerprint: its snapshots cannot be proven intact after a detach. Pure: reads
 * come through the caller's `read` (aligned to 4 KiB, whole blocks).
 */
import { createHash } from 'node:crypto';

/** The filesystems a fingerprint is taken of. */
export type FingerprintedFs = 'ext4' | 'xfs' | 'btrfs';

/** What a fingerprint says: the filesystem and a SHA-256 over what it writes when mounted. */
export interface OriginFingerprint {
  fs: FingerprintedFs;
  digest: string;
}

/** Reads `length` bytes at `offset` of the origin (both multiples of 4096). */
export type AlignedRead = (offset: number, length: number) => Promise<Buffer>;

const BLOCK = 4096;
const EXT4_MAGIC = 0xef53;
const XFS_MAGIC = 0x58465342; // "XFSB"
const XFS_LOG_MAGIC = 0xfeedbabe;
const BTRFS_MAGIC = '_BHRfS_M';
/** Log blocks (512 bytes) before the head that go into an XFS fingerprint: 256 KiB. */
const XFS_TAIL_BBS = 512;

/** The fingerprint of the filesystem on an origin of `sizeBytes`, or undefined when it has none. */
export async function fingerprintOrigin(read: AlignedRead, sizeBytes: number): Promise<OriginFingerprint | undefined> {
  if (sizeBytes < 128 * 1024) return undefined;
  const first = await read(0, BLOCK);
  if (first.readUInt32BE(0) === XFS_MAGIC) return fingerprintXfs(read, first, sizeBytes);
  if (first.readUInt16LE(1024 + 56) === EXT4_MAGIC) return { fs: 'ext4', digest: sha256(first.subarray(1024, 2048)) };
  const btrfs = await read(64 * 1024, BLOCK);
  if (btrfs.toString('latin1', 64, 72) === BTRFS_MAGIC) return { fs: 'btrfs', digest: sha256(btrfs) };
  return undefined;
}

/** XFS: the superblock, the log's head and the blocks just before it. */
async function fingerprintXfs(read: AlignedRead, sb: Buffer, sizeBytes: number): Promise<OriginFingerprint | undefined> {
  const blockSize = sb.readUInt32BE(4);
  const logStart = Number(sb.readBigUInt64BE(48));
  const agBlocks = sb.readUInt32BE(84);
  const logBlocks = sb.readUInt32BE(96);
  const agBlkLog = sb.readUInt8(124);
  // An external log (logstart 0) is on another device: nothing here shows its writes.
  if (logStart === 0 || blockSize < 512 || blockSize % 512 !== 0 || agBlocks === 0 || logBlocks === 0) return undefined;
  const agno = Math.floor(logStart / 2 ** agBlkLog);
  const agbno = logStart - agno * 2 ** agBlkLog;
  const logOffset = (agno * agBlocks + agbno) * blockSize;
  const logBBs = (logBlocks * blockSize) / 512;
  if (logOffset % BLOCK !== 0 || logOffset + logBBs * 512 > sizeBytes) return undefined;
  const log = new LogReader(read, logOffset);
  const head = await findHead(log, logBBs);
  const from = Math.max(0, head.index - XFS_TAIL_BBS);
  const tail = await log.bytes(from, head.index - from);
  const hash = createHash('sha256').update(sb.subarray(0, 512));
  hash.update(`head ${head.index} cycle ${head.cycle} first ${head.firstCycle}`).update(tail);
  return { fs: 'xfs', digest: hash.digest('hex') };
}

/**
 * Where the log's head is: the first block whose cycle is below block 0's (binary search,
 * as the cycles run C…C then C-1…C-1), or 0 when every block has block 0's cycle.
 */
async function findHead(log: LogReader, logBBs: number): Promise<{ index: number; cycle: number; firstCycle: number }> {
  const firstCycle = await log.cycle(0);
  const lastCycle = await log.cycle(logBBs - 1);
  if (lastCycle === firstCycle) return { index: 0, cycle: firstCycle, firstCycle };
  let low = 0;
  let high = logBBs - 1;
  while (high - low > 1) {
    const middle = Math.floor((low + high) / 2);
    if ((await log.cycle(middle)) === firstCycle) low = middle;
    else high = middle;
  }
  return { index: high, cycle: await log.cycle(high), firstCycle };
}

/** 512-byte log blocks read through 4 KiB-aligned reads, the last block read kept. */
class LogReader {
  private cached: { at: number; bytes: Buffer } | undefined;

  constructor(
    private readonly read: AlignedRead,
    private readonly offset: number,
  ) {}

  /** The cycle a log block was written in: a record header's h_cycle, else its first word. */
  async cycle(bb: number): Promise<number> {
    const block = await this.block(bb);
    return block.readUInt32BE(0) === XFS_LOG_MAGIC ? block.readUInt32BE(4) : block.readUInt32BE(0);
  }

  async bytes(fromBB: number, count: number): Promise<Buffer> {
    if (count <= 0) return Buffer.alloc(0);
    const start = this.offset + fromBB * 512;
    const aligned = start - (start % BLOCK);
    const end = start + count * 512;
    const length = Math.ceil((end - aligned) / BLOCK) * BLOCK;
    const data = await this.read(aligned, length);
    return data.subarray(start - aligned, end - aligned);
  }

  private async block(bb: number): Promise<Buffer> {
    const start = this.offset + bb * 512;
    const aligned = start - (start % BLOCK);
    if (this.cached?.at !== aligned) this.cached = { at: aligned, bytes: await this.read(aligned, BLOCK) };
    return this.cached.bytes.subarray(start - aligned, start - aligned + 512);
  }
}

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}
