/**
 * Snapshots brought back at boot: `prepare DEVICE --attach COW…` reads the label of each
 * COW it is told about (dmsnap never scans devices for labels: a COW on a device someone
 * else plants would receive the origin's old blocks) and attaches the snapshot only when
 *
 *   - the label names this origin (its name and size) and is sealed: dmsnap detached the
 *     origin cleanly (after a crash nothing proves the origin unwritten since);
 *   - the origin still shows the sealed fingerprint (origin-fingerprint.ts): it was not
 *     mounted read-write without dmsnap meanwhile;
 *   - the kernel's store under the label is valid, with the label's chunk size.
 *
 * A COW that fails any of these is refused and reported, and never written — but for a
 * merge a crash interrupted (label `merging`, unsealed): the origin is half merged, which
 * is no filesystem, so the merge resumes all the same (and the result says so). The snapshots
 * come back under the label's ids (the origin keeps its id across boots), on NAME-real,
 * before NAME exists; each label is unsealed (synced) before NAME runs snapshot-origin —
 * or snapshot-merge, for a rollback whose merge the detach interrupted, which resumes, or
 * one recorded with `rollback --at-boot` (rollback-at-boot.ts), which starts.
 */
import type { DeviceMapper } from '../dm/device-mapper';
import type { TargetLine } from '../dm/table';
import { DmsnapError } from '../errors';
import type { BlockDeviceInfo } from '../system/block-device';
import { devKey } from '../system/stack';
import { System } from '../system/system';
import { LABEL_AREA_BYTES, readLabel, type CowLabel } from '../targets/cow-label';
import { parseStoreHeader } from '../targets/exception-store';
import { fingerprintOrigin, type OriginFingerprint } from '../targets/origin-fingerprint';
import { snapshot as snapshotTarget } from '../targets/snapshot';
import { snapshotMerge } from '../targets/snapshot-merge';
import { snapshotOrigin } from '../targets/snapshot-origin';
import { sectors, sectorsToBytes } from '../units';
import { HIDDEN_LAYER } from './context';
import { createCowMapping, updateCowLabel } from './cow-mapping';
import { formatTag } from './tags';

/** What became of one COW named to prepare --attach. */
export interface AttachResult {
  cow: string;
  /** The snapshot attached, or null when refused. */
  snapshot: string | null;
  /** 'attached', 'merging' (a rollback resumed), 'rollback-started' (one recorded with --at-boot), or 'refused'. */
  outcome: 'attached' | 'merging' | 'rollback-started' | 'refused';
  /** Why it was refused; for a merge resumed after a crash, what that means; null otherwise. */
  reason: string | null;
}

/** A COW that passed every check. */
interface Accepted {
  path: string;
  info: BlockDeviceInfo;
  label: CowLabel;
  /** A merge resumed without a seal (after a crash): nothing proves the origin unwritten. */
  unproven: boolean;
}

/** The checks of every COW against the origin device; nothing is written. */
export async function checkAttach(system: System, name: string, device: string, disk: BlockDeviceInfo, cows: readonly string[]): Promise<{ accepted: Accepted[]; refused: AttachResult[] }> {
  const fingerprint = await deviceFingerprint(system, device, disk);
  const accepted: Accepted[] = [];
  const refused: AttachResult[] = [];
  for (const path of cows) {
    const checked = await checkCow(system, path, name, disk, fingerprint).catch((error: unknown) => (error instanceof Error ? error.message : String(error)));
    const conflict = typeof checked === 'string' ? undefined : conflictWith(accepted, checked);
    if (typeof checked === 'string' || conflict) refused.push({ cow: path, snapshot: null, outcome: 'refused', reason: typeof checked === 'string' ? checked : conflict! });
    else accepted.push(checked);
  }
  return { accepted, refused };
}

/** Whether the attach merges the label's snapshot back: a merge in progress, or one recorded for this boot. */
function mergesBack(label: CowLabel): boolean {
  return label.state === 'merging' || Boolean(label.rollbackAtBoot);
}

/** Why a checked COW cannot join the ones accepted before it, or undefined. */
function conflictWith(accepted: readonly Accepted[], next: Accepted): string | undefined {
  const first = accepted[0];
  if (first && first.label.origin.id !== next.label.origin.id) return `its snapshot belongs to an earlier preparation of ${next.label.origin.name} (origin id ${next.label.origin.id}, not ${first.label.origin.id})`;
  if (accepted.some((a) => a.label.snapshot.id === next.label.snapshot.id || a.label.snapshot.name === next.label.snapshot.name)) return `snapshot ${next.label.snapshot.name} is on another COW named too`;
  if (accepted.some((a) => mergesBack(a.label)) && mergesBack(next.label)) return 'another COW named is being merged back already';
  if (accepted.some((a) => devKey(a.info) === devKey(next.info))) return 'it is named twice';
  return undefined;
}

async function deviceFingerprint(system: System, device: string, disk: BlockDeviceInfo): Promise<OriginFingerprint | undefined> {
  const held = await system.openBlockDevice(device, { exclusive: false, writable: false });
  try {
    return await fingerprintOrigin((offset, length) => held.read(offset, length, { direct: true }), sectorsToBytes(disk.sizeSectors));
  } finally {
    held.close();
  }
}

/** One COW's label and store checked against the origin; a refusal is thrown as a message. */
async function checkCow(system: System, path: string, name: string, disk: BlockDeviceInfo, fingerprint: OriginFingerprint | undefined): Promise<Accepted> {
  // Exclusive: a COW in use (mounted, or another snapshot's) is never attached.
  const held = await system.openBlockDevice(path, { exclusive: true, writable: false });
  try {
    const info = await held.info();
    const label = readLabel(await held.read(0, LABEL_AREA_BYTES, { direct: true }))?.label;
    if (!label) throw new Error('it carries no dmsnap label');
    const { origin, snapshot } = label;
    if (origin.name !== name) throw new Error(`its snapshot ${snapshot.name} is of origin ${origin.name}, not ${name}`);
    if (origin.sizeSectors !== disk.sizeSectors) throw new Error(`its origin had ${origin.sizeSectors} sectors; the device has ${disk.sizeSectors}`);
    const unproven = !label.seal && label.state === 'merging';
    if (!label.seal && !unproven) throw new Error(`${name} was not detached cleanly since snapshot ${snapshot.name} was attached (a crash or power cut?): nothing proves the origin unwritten${label.rollbackAtBoot ? '; the rollback recorded with --at-boot is not made' : ''}`);
    if (label.seal && !fingerprint) throw new Error(`the device holds no ext4, XFS or btrfs now (the seal is of ${label.seal.fs})`);
    if (label.seal && fingerprint && (fingerprint.fs !== label.seal.fs || fingerprint.digest !== label.seal.digest)) {
      throw new Error(`the origin was written since snapshot ${snapshot.name} was detached (its ${label.seal.fs} fingerprint changed): the snapshot would read wrong`);
    }
    const store = parseStoreHeader(await held.read(sectorsToBytes(label.dataOffsetSectors), 4096, { direct: true }));
    if (store.kind !== 'store' || !store.valid || store.chunkSectors !== snapshot.chunkSectors) {
      throw new Error(`the exception store under the label is ${store.kind === 'store' ? (store.valid ? `of ${store.chunkSectors}-sector chunks` : 'invalid (the snapshot overflowed or failed)') : 'empty'}`);
    }
    if (info.sizeSectors <= label.dataOffsetSectors) throw new Error('it is smaller than its label says');
    return { path, info, label, unproven };
  } finally {
    held.close();
  }
}

/**
 * Attaches the accepted COWs on NAME-real (`real`) and returns NAME's table and a result
 * per COW; the caller creates NAME with that table. Labels are unsealed before it runs.
 */
export async function attachAccepted(dm: DeviceMapper, originId: string, real: { major: number; minor: number }, disk: BlockDeviceInfo, accepted: readonly Accepted[]): Promise<{ table: TargetLine[] | undefined; results: AttachResult[] }> {
  const length = sectors(disk.sizeSectors);
  const realKey = devKey(real);
  const results: AttachResult[] = [];
  let merge: TargetLine | undefined;
  for (const { path, info, label, unproven } of accepted) {
    const { snapshot } = label;
    const mapping = await createCowMapping(dm, originId, snapshot.id, snapshot.name, info, snapshot.chunkSectors);
    const line = { length, origin: realKey, cow: devKey(mapping), persistent: true, chunkSectors: snapshot.chunkSectors };
    if (mergesBack(label)) {
      // The merge goes on (or starts) from the store: NAME runs snapshot-merge, no snapshot device.
      merge = snapshotMerge(line);
      const note = unproven ? `${snapshot.name}'s merge was interrupted by a crash: it resumes, since a half-merged device holds no filesystem, but writes made to the origin meanwhile without dmsnap may be lost` : null;
      results.push({ cow: path, snapshot: snapshot.name, outcome: label.state === 'merging' ? 'merging' : 'rollback-started', reason: note });
    } else {
      const tag = formatTag({ originId, role: 'snap', snapId: snapshot.id, ...(snapshot.trackingSince === null ? {} : { trackingSince: snapshot.trackingSince }) });
      await dm.create(snapshot.name, { uuid: tag, table: [snapshotTarget(line)], udevFlags: HIDDEN_LAYER });
      results.push({ cow: path, snapshot: snapshot.name, outcome: 'attached', reason: null });
    }
    // Attached: a crash from here on leaves it unsealed, never attached again unproven.
    await updateCowLabel(System.of(dm), info, (current) => ({ ...current, seal: null, ...(mergesBack(current) ? { state: 'merging' as const, rollbackAtBoot: null } : {}) }));
  }
  const table = merge ? [merge] : accepted.length > 0 ? [snapshotOrigin({ length, origin: realKey })] : undefined;
  return { table, results };
}

/** The error prepare raises when the device is in use while it attaches. */
export function attachFailed(name: string, error: unknown): DmsnapError {
  return new DmsnapError(`attaching the snapshots of ${name} failed: ${error instanceof Error ? error.message : String(error)}; ${name} was not prepared`, 'ERR_DMSNAP_SNAPSHOT_FAILED', { cause: error });
}
