/**
 * What a device holds before dmsnap overwrites it. Zeroing the first chunk of the COW
 * device is the only write dmsnap makes to a user's device, so a COW that carries a
 * filesystem, RAID or LVM member, LUKS header or partition table is refused unless the
 * caller forces it. Signatures come from libblkid through the addon. The dm-snapshot
 * header of an old COW is reported but never refused: reusing a COW is the normal case.
 */
import { DmsnapError } from '../errors';
import { callNative, loadBinding, type NativeBinding, type NativeSignature } from '../native';
import type { HeldBlockDevice } from '../system/held-device';
import { MIN_DATA_OFFSET_SECTORS } from '../targets/cow-label';
import { isChunkSize, MAX_CHUNK_SECTORS } from '../targets/snapshot';
import { check, checkPath } from '../validate';

/** The magic of a persistent dm-snapshot header, "SnAp" read as a little-endian u32. */
const SNAPSHOT_MAGIC = 0x70416e53;

/** Where a store under dmsnap's label begins at the least (targets/cow-label.ts). */
const LABELLED_STORE_MIN = MIN_DATA_OFFSET_SECTORS * 512;

/** Where a kernel store's header may be: byte 0 of a plain COW, or max(64 KiB, one chunk) under dmsnap's label. */
const HEADER_OFFSETS = [0, ...Array.from({ length: 22 - 7 }, (_, i) => LABELLED_STORE_MIN * 2 ** i)].filter((at) => at <= MAX_CHUNK_SECTORS * 512);

/** One signature found on a device. */
export interface DeviceSignature {
  /** blkid's type ('ext4', 'xfs', 'swap', 'crypto_LUKS', 'LVM2_member', 'dos', 'gpt', …), or 'dm-snapshot'. */
  type: string;
  /** 'filesystem', 'raid', 'crypto', 'partition_table', 'other', or 'snapshot-cow' for a dm-snapshot header. */
  usage: string;
  label?: string;
  uuid?: string;
  /** Byte offset of the signature's magic on the device. */
  offsetBytes: number;
}

/** Options of probeSignatures. */
export interface SignatureOptions {
  /** @internal The native binding to use; tests inject a fake one. */
  binding?: NativeBinding;
}

/** Options of checkCowIsBlank. */
export interface CheckCowOptions extends SignatureOptions {
  /** Overwrite the COW even if it holds data (forceWipe / --force-wipe). */
  force?: boolean;
}

/** The COW device holds data that zeroing its first chunk would destroy. */
export class CowHasDataError extends DmsnapError {
  /** The COW device. */
  readonly path: string;
  /** What was found, the dm-snapshot header of an old COW excepted. */
  readonly signatures: DeviceSignature[];

  constructor(path: string, signatures: DeviceSignature[]) {
    super(
      `COW device ${path} holds ${describeSignatures(signatures)}; dmsnap zeroes the start of the COW device, ` +
        `which would destroy it: check that this is the device you meant, or pass forceWipe / --force-wipe to overwrite it`,
      'ERR_DMSNAP_COW_HAS_DATA',
    );
    this.path = path;
    this.signatures = signatures;
  }
}

/**
 * libblkid's name for the header of a persistent dm-snapshot COW: the magic "SnAp" at
 * byte 0, which is SNAP_MAGIC 0x70416e53 little-endian, the very test the kernel makes
 * (drivers/md/dm-snap-persistent.c).
 */
const BLKID_SNAPSHOT_COW = 'DM_snapshot_cow';
const SNAPSHOT_COW_USAGE = 'snapshot-cow';

/**
 * All signatures on the device as libblkid finds them, backup copies and several
 * filesystems at once included. The header of an old dm-snapshot COW comes back as
 * { type: 'dm-snapshot', usage: 'snapshot-cow' }: checkCowIsBlank never blocks on it.
 * Works on block devices and image files; opens read-only, never exclusively, and
 * writes nothing.
 */
export async function probeSignatures(path: string, options: SignatureOptions = {}): Promise<DeviceSignature[]> {
  checkPath(path, 'path');
  const binding = options.binding ?? loadBinding();
  return (await callNative(() => binding.probeSignatures(path))).map(toSignature);
}

function toSignature(s: NativeSignature): DeviceSignature {
  if (s.type === BLKID_SNAPSHOT_COW && s.offset === 0) return { type: 'dm-snapshot', usage: SNAPSHOT_COW_USAGE, offsetBytes: 0 };
  return {
    type: s.type,
    usage: s.usage,
    ...(s.label ? { label: s.label } : {}),
    ...(s.uuid ? { uuid: s.uuid } : {}),
    offsetBytes: s.offset,
  };
}

/** The two reads the check makes: by path, or of a device held open. */
interface CowReader {
  path: string;
  signatures(): Promise<DeviceSignature[]>;
  read(offset: number, length: number): Promise<Buffer>;
}

/**
 * Where an old COW's own area begins: after its header chunk and first metadata chunk,
 * the device holds copies of origin blocks (and more metadata), in which blkid finds the
 * origin's signatures. Read from the header's chunk size; 0 if the header is not sound.
 */
async function oldSnapshotDataStart(reader: CowReader): Promise<number> {
  for (const at of HEADER_OFFSETS) {
    const header = await reader.read(at, 16).catch(() => Buffer.alloc(0));
    if (header.length < 16 || header.readUInt32LE(0) !== SNAPSHOT_MAGIC) continue;
    const chunkSectors = header.readUInt32LE(12);
    if (!isChunkSize(chunkSectors, 1)) return 0;
    // Under dmsnap's label the store starts at max(64 KiB, one chunk), and nowhere else.
    if (at !== 0 && at !== Math.max(LABELLED_STORE_MIN, chunkSectors * 512)) continue;
    return at + 2 * chunkSectors * 512;
  }
  return 0;
}

/**
 * Refuses a COW device that holds data: throws CowHasDataError (code
 * 'ERR_DMSNAP_COW_HAS_DATA') naming every signature found, unless there is none or
 * options.force is set. An old COW (with a dm-snapshot header) is the normal case:
 * signatures inside its copied blocks are the origin's old data and do not block, but
 * anything in its header and first metadata chunk does (an old COW later made an LVM PV
 * or md member keeps its "SnAp" at byte 0). Returns what was found.
 */
export async function checkCowIsBlank(path: string, options: CheckCowOptions = {}): Promise<DeviceSignature[]> {
  check(options.force === undefined || typeof options.force === 'boolean', 'options.force', 'a boolean', options.force);
  checkPath(path, 'path');
  const binding = options.binding ?? loadBinding();
  return checkReader(
    { path, signatures: () => probeSignatures(path, options), read: (offset, length) => callNative(() => binding.readDeviceBytes(path, offset, length)) },
    options.force === true,
  );
}

/**
 * checkCowIsBlank of a device dmsnap holds open (the COW, from its checks to its
 * zeroing): what is checked is what will be written, whatever becomes of the path.
 * @internal
 */
export async function checkOpenCowIsBlank(device: HeldBlockDevice, force: boolean): Promise<DeviceSignature[]> {
  return checkReader(
    {
      path: device.path,
      signatures: async () => (await device.probeSignatures()).map(toSignature),
      read: (offset, length) => device.read(offset, length),
    },
    force,
  );
}

async function checkReader(reader: CowReader, force: boolean): Promise<DeviceSignature[]> {
  const signatures = await reader.signatures();
  // blkid finds a kernel store only at byte 0; one under dmsnap's label is looked for too.
  const isOldCow = signatures.some((s) => s.usage === SNAPSHOT_COW_USAGE) || signatures.some((s) => s.offsetBytes >= LABELLED_STORE_MIN);
  const dataStart = isOldCow ? await oldSnapshotDataStart(reader) : 0;
  const blocking = signatures.filter((s) => s.usage !== SNAPSHOT_COW_USAGE && (dataStart === 0 || s.offsetBytes < dataStart));
  if (blocking.length > 0 && !force) throw new CowHasDataError(reader.path, blocking);
  return signatures;
}

/** "an ext4 filesystem (label "home", UUID …) at offset 1080 and a GPT partition table (gpt) at offsets 512 and 8388096". */
export function describeSignatures(signatures: readonly DeviceSignature[]): string {
  // Backup copies of one signature (GPT, LUKS2, FAT) are named once, with all their offsets.
  const groups = new Map<string, { signature: DeviceSignature; offsets: number[] }>();
  for (const signature of signatures) {
    const key = JSON.stringify([signature.type, signature.usage, signature.label ?? '', signature.uuid ?? '']);
    const group = groups.get(key);
    if (group) group.offsets.push(signature.offsetBytes);
    else groups.set(key, { signature, offsets: [signature.offsetBytes] });
  }
  const parts = [...groups.values()].map(({ signature, offsets }) => {
    const noun = KNOWN_TYPES[signature.type] ?? genericNoun(signature);
    const details = [
      ...(noun.includes(signature.type) ? [] : [signature.type]),
      ...(signature.label ? [`label ${JSON.stringify(signature.label)}`] : []),
      ...(signature.uuid ? [`UUID ${signature.uuid}`] : []),
    ];
    const where = offsets.length === 1 ? `at offset ${offsets[0]}` : `at offsets ${joinWords(offsets.map(String))}`;
    return `${withArticle(noun)}${details.length ? ` (${details.join(', ')})` : ''} ${where}`;
  });
  return joinWords(parts);
}

/** Plain names for the signatures a COW candidate most often carries. */
const KNOWN_TYPES: Record<string, string> = {
  linux_raid_member: 'md RAID member superblock',
  LVM2_member: 'LVM2 physical volume',
  crypto_LUKS: 'LUKS encryption header',
  swap: 'swap area',
  bcache: 'bcache superblock',
  dos: 'MBR (dos) partition table',
  gpt: 'GPT partition table',
  PMBR: 'GPT protective MBR',
  'dm-snapshot': 'dm-snapshot COW header',
};

function genericNoun(signature: DeviceSignature): string {
  switch (signature.usage) {
    case 'filesystem':
      return `${signature.type} filesystem`;
    case 'raid':
      return `${signature.type} RAID member`;
    case 'crypto':
      return `${signature.type} encryption header`;
    case 'partition_table':
      return `${signature.type} partition table`;
    default:
      return `${signature.type} signature`;
  }
}

function withArticle(noun: string): string {
  // By sound: "an ext4", "an xfs", "an MBR", "an LVM2", "an md", but "a udf", "a GPT", "a LUKS".
  return /^([aeio]|MBR|LVM|md\b|xfs|ntfs|hfs|f2fs)/i.test(noun) ? `an ${noun}` : `a ${noun}`;
}

function joinWords(words: string[]): string {
  if (words.length <= 1) return words.join('');
  return `${words.slice(0, -1).join(', ')} and ${words.at(-1)}`;
}
