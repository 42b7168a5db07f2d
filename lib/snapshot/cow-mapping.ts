/**
 * A persistent snapshot's COW carries dmsnap's label at its start (targets/cow-label.ts),
 * so the kernel is given the COW past it: NAME-SNAP-cow, a linear mapping of the COW from
 * the label's data offset, tagged DMSNAP-<originId>-cow-<snapId>. The snapshot's table
 * names that mapping; the label is written (and synced) before the mapping exists, and
 * cleared before it goes, so a label on a COW always describes a snapshot that was made.
 * A transient snapshot (N) has no label and no mapping: it cannot outlive the kernel.
 */
import type { DeviceInfo, DeviceMapper } from '../dm/device-mapper';
import { DmsnapError } from '../errors';
import type { BlockDeviceInfo } from '../system/block-device';
import type { HeldBlockDevice } from '../system/held-device';
import { devicePathOf, devKey, holdersOf, type DevNumber } from '../system/stack';
import { System } from '../system/system';
import { dataOffsetSectors, LABEL_AREA_BYTES, nextLabelWrite, readLabel, type CowLabel, type LabelState } from '../targets/cow-label';
import { linear, parseLinearParams } from '../targets/linear';
import { persistentCowSectors } from '../targets/snapshot';
import { sectors, sectorsToBytes, type Sectors } from '../units';
import { HIDDEN_LAYER } from './context';
import type { OriginGroup, TaggedDevice } from './discover';
import { formatTag } from './tags';
import { backOutSwap } from './back-out';

/** The state a label goes back to when no merge runs: tracking or active. */
export function restingState(label: CowLabel): LabelState {
  return label.snapshot.trackingSince !== null ? 'tracking' : 'active';
}

/** The name of a snapshot's COW mapping. */
export function cowMappingName(snapshotName: string): string {
  return `${snapshotName}-cow`;
}

/** What the label of a new snapshot's COW says. */
export interface LabelSubject {
  origin: { id: string; name: string; sizeSectors: number };
  snapshot: { id: string; name: string; chunkSectors: Sectors; trackingSince: number | null };
}

/** What a persistent COW needs for every chunk of the origin to be copied: the label's offset and the full store. */
export function labelledCowSectors(originSectors: Sectors, chunkSectors: Sectors): Sectors {
  return sectors(dataOffsetSectors(chunkSectors) + persistentCowSectors(originSectors, chunkSectors));
}

/** The bytes a persistent snapshot's COW starts with: zeroes up to and with the store's header chunk. */
export function cowStartBytes(chunkSectors: Sectors): number {
  return sectorsToBytes(dataOffsetSectors(chunkSectors)) + sectorsToBytes(chunkSectors);
}

/**
 * Writes the first label of a new snapshot's COW through `device` (zeroed up to and with
 * the store's header chunk just before), and syncs it.
 */
export async function writeFirstLabel(device: HeldBlockDevice, subject: LabelSubject, state: LabelState): Promise<CowLabel> {
  const write = nextLabelWrite(undefined, {
    dataOffsetSectors: dataOffsetSectors(subject.snapshot.chunkSectors),
    origin: { id: subject.origin.id, name: subject.origin.name, sizeSectors: sectors(subject.origin.sizeSectors) },
    snapshot: { ...subject.snapshot, createdAt: new Date().toISOString() },
    state,
    writtenAt: new Date().toISOString(),
  });
  await device.writeAt(write.offsetBytes, write.bytes);
  return write.label;
}

/** Creates NAME-SNAP-cow over `cow` past the label; the snapshot table names the device it returns. */
export async function createCowMapping(dm: DeviceMapper, originId: string, snapId: string, snapshotName: string, cow: BlockDeviceInfo, chunkSectors: Sectors): Promise<DeviceInfo> {
  const offset = dataOffsetSectors(chunkSectors);
  const table = [linear({ length: sectors(cow.sizeSectors - offset), device: devKey(cow), offset })];
  return dm.create(cowMappingName(snapshotName), { uuid: formatTag({ originId, role: 'cow', snapId }), table, udevFlags: HIDDEN_LAYER });
}

/**
 * A COW mapping made as large as the COW under it is now (after a COW file grew): the new
 * table loaded and swapped in; the kernel's store sees the new size at its next chunk.
 */
export async function growCowMapping(dm: DeviceMapper, mapping: TaggedDevice, cow: BlockDeviceInfo): Promise<void> {
  const [line] = await dm.table(mapping.name);
  if (line?.type !== 'linear') throw new DmsnapError(`the COW mapping ${mapping.name} runs ${line?.type ?? 'no table'}, not linear`, 'ERR_DMSNAP_INCONSISTENT');
  const { device, offset } = parseLinearParams(line.params);
  if (device !== devKey(cow)) throw new DmsnapError(`the COW mapping ${mapping.name} maps ${device}, not ${devKey(cow)}`, 'ERR_DMSNAP_INCONSISTENT');
  const length = cow.sizeSectors - offset;
  if (length <= line.length) return;
  await dm.load(mapping.name, [linear({ length: sectors(length), device, offset })]);
  try {
    await dm.resume(mapping.name, { skipLockfs: true, udevFlags: HIDDEN_LAYER });
  } catch (error) {
    await backOutSwap(dm, mapping.name, { staged: true, udevFlags: HIDDEN_LAYER });
    throw error;
  }
}

/** The device a COW mapping maps (the COW the user named, or a COW file's loop device), from its table. */
export async function mappedCow(dm: DeviceMapper, mappingName: string): Promise<(DevNumber & { path: string | null }) | undefined> {
  const [line] = await dm.table(mappingName).catch(() => []);
  if (line?.type !== 'linear') return undefined;
  const [major, minor] = parseLinearParams(line.params).device.split(':').map(Number);
  if (!Number.isInteger(major) || !Number.isInteger(minor)) return undefined;
  return { major, minor, path: devicePathOf({ major, minor }) ?? null };
}

/** The label on the COW under a mapping, read past the page cache; undefined when it has none. */
export async function readCowLabel(system: System, cow: DevNumber): Promise<CowLabel | undefined> {
  const device = await openByNumber(system, cow, false);
  try {
    return readLabel(await device.read(0, LABEL_AREA_BYTES, { direct: true }))?.label;
  } finally {
    device.close();
  }
}

/** Writes the label's next version (state changed) on the COW under a mapping, and syncs it. */
export async function updateCowLabel(system: System, cow: DevNumber, change: (label: CowLabel) => Omit<CowLabel, 'seq'>): Promise<CowLabel> {
  const device = await openByNumber(system, cow, true);
  try {
    const current = readLabel(await device.read(0, LABEL_AREA_BYTES, { direct: true }))?.label;
    if (!current) throw new DmsnapError(`the COW ${device.path} carries no dmsnap label (it was overwritten?)`, 'ERR_DMSNAP_NOT_FOUND');
    const write = nextLabelWrite(current, { ...change(current), writtenAt: new Date().toISOString() });
    await device.writeAt(write.offsetBytes, write.bytes);
    return write.label;
  } finally {
    device.close();
  }
}

/**
 * Removes a COW mapping of dmsnap's (found by its tag) once its snapshot is gone: the label
 * under it cleared and synced first, so no label outlives its snapshot.
 */
export async function removeCowMapping(dm: DeviceMapper, mapping: TaggedDevice): Promise<{ labelProblem: string | null }> {
  const cow = await mappedCow(dm, mapping.name);
  const system = System.of(dm);
  // A label that cannot be cleared (a failing COW) stays unsealed: never attached again.
  const labelProblem = cow ? await keepOrClearLabel(system, cow).then(() => null, (error: unknown) => (error instanceof Error ? error.message : String(error))) : null;
  await dm.remove(mapping.name, { retry: true });
  return { labelProblem };
}

/** Clears the label on `cow` unless it is sealed (a clean detach keeps it for the next attach). */
async function keepOrClearLabel(system: System, cow: DevNumber): Promise<void> {
  if ((await readCowLabel(system, cow))?.seal) return;
  await clearCowLabel(system, cow);
}

/** Zeroes (and syncs) both label slots of a COW: no snapshot is described there any more. */
export async function clearCowLabel(system: System, cow: DevNumber): Promise<void> {
  const device = await openByNumber(system, cow, true);
  try {
    await device.zeroStart(LABEL_AREA_BYTES);
  } finally {
    device.close();
  }
}

/**
 * Opens a device by number through its /dev node (named by sysfs, else udev's
 * /dev/block/MAJOR:MINOR), and checks the node is that device.
 */
async function openByNumber(system: System, dev: DevNumber, writable: boolean): Promise<HeldBlockDevice> {
  const path = devicePathOf(dev) ?? `/dev/block/${devKey(dev)}`;
  const device = await system.openBlockDevice(path, { exclusive: false, writable });
  if (devKey(device.number) !== devKey(dev)) {
    device.close();
    throw new DmsnapError(`${path} is device ${devKey(device.number)}, not the COW ${devKey(dev)}`, 'ERR_DMSNAP_NOT_FOUND');
  }
  return device;
}

/**
 * Removes the COW mappings of `group` that no snapshot table uses any more: those of the
 * snapshots in `snapIds` (just removed), or every orphan when snapIds is undefined. The
 * ones still in use by some table (holders in sysfs, or a snapshot of the same id) stay.
 */
export async function removeUnusedCowMappings(dm: DeviceMapper, group: OriginGroup, snapIds?: readonly string[]): Promise<{ name: string; labelProblem: string | null }[]> {
  const removed: { name: string; labelProblem: string | null }[] = [];
  for (const mapping of group.cows) {
    if (snapIds && !snapIds.includes(mapping.tag.snapId!)) continue;
    if (!snapIds && group.snaps.some((s) => s.tag.snapId === mapping.tag.snapId)) continue;
    if (holdersOf(mapping).length > 0) continue;
    removed.push({ name: mapping.name, ...(await removeCowMapping(dm, mapping)) });
  }
  return removed;
}
