/**
 * How dmsnap tags the device-mapper devices it creates: a uuid with a fixed prefix, the
 * origin's id and the device's role. Everything dmsnap knows about its devices is read
 * back from these tags and the kernel's tables, so there are no state files, and a
 * device without the tag is never modified.
 *
 *   DMSNAP-<originId>-origin          the wrapper NAME the filesystem is mounted on
 *   DMSNAP-<originId>-real            NAME-real, the origin of every snapshot
 *   DMSNAP-<originId>-snap-<snapId>   a snapshot device
 *   DMSNAP-<originId>-snap-<snapId>-track-<seconds>
 *                                     a tracking snapshot, taken at <seconds> (Unix time):
 *                                     kept between backups, its exception table lists the
 *                                     origin's changes since then
 *   DMSNAP-<originId>-cow-<snapId>    NAME-SNAP-cow, a persistent snapshot's COW past
 *                                     dmsnap's label (linear over the COW the user named)
 */

/** The start of every dmsnap uuid; a device whose uuid lacks it is never touched. */
export const UUID_PREFIX = 'DMSNAP-';

/** A device's part in an origin: the wrapper NAME, NAME-real, a snapshot, or a snapshot's COW mapping. */
export type DeviceRole = 'origin' | 'real' | 'snap' | 'cow';

/** A dmsnap uuid, parsed. */
export interface Tag {
  /** 16 hex digits, shared by the devices of one origin. */
  originId: string;
  role: DeviceRole;
  /** Only for roles 'snap' and 'cow'. */
  snapId?: string;
  /** Only for role 'snap' and a tracking snapshot (kept for changed-block tracking): when it was taken, in Unix seconds. */
  trackingSince?: number;
}

const TAG = /^DMSNAP-([0-9a-f]{16})-(origin|real|snap|cow)(?:-([0-9a-f]{8})(?:-track-(\d{1,12}))?)?$/;

// node:crypto is loaded only when an id is made: the CLI starts faster without it.
function randomHex(bytes: number): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('node:crypto') as typeof import('node:crypto')).randomBytes(bytes).toString('hex');
}

/** A random origin id: 16 hex digits. */
export function newOriginId(): string {
  return randomHex(8);
}

/** A random snapshot id: 8 hex digits, so that each snapshot's uuid is unique. */
export function newSnapId(): string {
  return randomHex(4);
}

/** The uuid for a tag: DMSNAP-<originId>-<role>, plus -<snapId> for a snapshot or its COW (and -track-<seconds> for a tracking snapshot). */
export function formatTag(tag: Tag): string {
  const tracking = tag.role === 'snap' && tag.trackingSince !== undefined ? `-track-${tag.trackingSince}` : '';
  const snap = tag.role === 'snap' || tag.role === 'cow' ? `-${tag.snapId}${tracking}` : '';
  return `${UUID_PREFIX}${tag.originId}-${tag.role}${snap}`;
}

/** The tag in a device uuid, or undefined for a device dmsnap did not create. */
export function parseTag(uuid: string | null | undefined): Tag | undefined {
  const match = uuid ? TAG.exec(uuid) : null;
  if (!match) return undefined;
  const [, originId, role, snapId, since] = match;
  if ((role === 'snap' || role === 'cow') !== (snapId !== undefined)) return undefined;
  if (role === 'cow' && since !== undefined) return undefined;
  return { originId, role: role as DeviceRole, ...(snapId ? { snapId } : {}), ...(since ? { trackingSince: Number(since) } : {}) };
}
