/**
 * Keeping /dev/mapper in step with the kernel, with or without udev.
 *
 * With udev running, dmsnap speaks libdevmapper's cookie protocol: it passes a cookie
 * in the event_nr field of RESUME, REMOVE and RENAME; udev's dm rules create or remove
 * /dev/mapper/NAME and then run `dmsetup udevcomplete COOKIE`, which decrements a SysV
 * semaphore that dmsnap waits on (bounded, so a missing rule never hangs).
 * Without udev, dmsnap creates and removes the block nodes itself, as libdevmapper's
 * fallback does.
 */
import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { callNative, type NativeBinding, type NativeDeviceInfo } from '../native';

/**
 * Flags carried in the high 16 bits of a udev cookie, as libdevmapper defines them and
 * `dmsetup udevflags` decodes them.
 */
export const UdevFlags = {
  /** Skip the dm rules: no /dev/mapper link. */
  disableDmRules: 0x0001,
  disableSubsystemRules: 0x0002,
  /** Skip the disk rules: no blkid probe, no /dev/disk/by-* links (for private layers). */
  disableDiskRules: 0x0004,
  disableOtherRules: 0x0008,
  lowPriority: 0x0010,
  /** udev, not the library, creates the nodes. */
  disableLibraryFallback: 0x0020,
  /** The event comes from a library call that activated the device. */
  primarySource: 0x0040,
} as const;

/** Where /dev/mapper lives. */
export const DEFAULT_DEV_DIR = '/dev/mapper';
/** How long to wait for udev to process a device's uevents. */
export const DEFAULT_UDEV_TIMEOUT_MS = 30_000;
/** Permissions of nodes dmsnap creates itself (libdevmapper's default). */
const NODE_MODE = 0o600;

/** True when a udev daemon is running (its control socket exists). */
export function udevIsRunning(): boolean {
  return existsSync('/run/udev/control');
}

export interface NodeSyncOptions {
  /** Use the udev cookie protocol: 'auto' (default) when udev is running. */
  udev?: boolean | 'auto';
  /** Bound on each wait for udev, in milliseconds. */
  udevTimeoutMs?: number;
  /** The directory of device nodes, normally /dev/mapper. */
  devDir?: string;
}

export class NodeSync {
  readonly udev: boolean;
  readonly udevTimeoutMs: number;
  readonly devDir: string;

  constructor(
    private readonly binding: NativeBinding,
    options: NodeSyncOptions = {},
  ) {
    this.udev = options.udev === undefined || options.udev === 'auto' ? udevIsRunning() : options.udev;
    this.udevTimeoutMs = options.udevTimeoutMs ?? DEFAULT_UDEV_TIMEOUT_MS;
    this.devDir = options.devDir ?? DEFAULT_DEV_DIR;
  }

  nodePath(name: string): string {
    return join(this.devDir, name);
  }

  /**
   * Runs an ioctl that may send a uevent (RESUME, REMOVE, RENAME) with a udev cookie,
   * then waits for udev to finish with it. Returns whether udev answered in time
   * (always true without udev).
   */
  async withCookie(extraFlags: number, op: (eventNr: number) => Promise<NativeDeviceInfo>): Promise<{ info: NativeDeviceInfo; udevSynced: boolean }> {
    if (!this.udev) return { info: await op(0), udevSynced: true };
    const { binding } = this;
    const cookie = binding.udevCookieCreate();
    let info: NativeDeviceInfo;
    try {
      binding.udevCookieAdd(cookie.semid, 1);
      const flags = UdevFlags.primarySource | UdevFlags.disableLibraryFallback | extraFlags;
      info = await op(((flags << 16) | cookie.base) >>> 0);
    } catch (error) {
      binding.udevCookieDestroy(cookie.semid);
      throw error;
    }
    if (!(info.flags & binding.constants.DM_UEVENT_GENERATED_FLAG)) binding.udevCookieAdd(cookie.semid, -1);
    const udevSynced = await callNative(() => binding.udevCookieWait(cookie.semid, this.udevTimeoutMs));
    if (!udevSynced) {
      process.emitWarning(
        `udev did not confirm the uevent of device-mapper device "${info.name}" within ${this.udevTimeoutMs} ms; ` +
          `check that the dm udev rules (95-dm-notify.rules) are installed. dmsnap manages ${this.nodePath(info.name)} itself this time.`,
        { code: 'DMSNAP_UDEV_TIMEOUT' },
      );
    }
    return { info, udevSynced };
  }

  /**
   * Makes /dev/mapper/NAME a block node for major:minor, unless udev looks after it
   * (udev runs and confirmed the uevent in time).
   */
  async ensureNode(name: string, major: number, minor: number, udevSynced: boolean): Promise<void> {
    if (this.udev && udevSynced) return;
    const path = this.nodePath(name);
    const existing = await fs.lstat(path).catch(() => undefined);
    if (existing) {
      if (existing.isSymbolicLink()) return; // udev's link; leave it to udev
      const matches = existing.isBlockDevice() && existing.rdev === makeDev(major, minor);
      if (matches) return;
      if (!existing.isBlockDevice()) return; // not ours to replace
      await fs.unlink(path);
    }
    await callNative(() => this.binding.makeBlockNode(path, major, minor, NODE_MODE));
  }

  /** Removes /dev/mapper/NAME if it is a block node or a link (never any other file). */
  async removeNode(name: string, udevSynced: boolean): Promise<void> {
    if (this.udev && udevSynced) return;
    const path = this.nodePath(name);
    const existing = await fs.lstat(path).catch(() => undefined);
    if (existing && (existing.isBlockDevice() || existing.isSymbolicLink())) {
      await fs.unlink(path).catch(() => undefined);
    }
  }
}

/** The dev_t that Node's fs.Stats.rdev reports for major:minor (glibc's encoding). */
export function makeDev(major: number, minor: number): number {
  return (
    (minor & 0xff) +
    (major & 0xfff) * 0x100 +
    (minor & ~0xff) * 0x1000 +
    // major bits above 12 land at bit 32 and up: use arithmetic, not 32-bit shifts
    Math.floor(major / 0x1000) * 0x100000000 * 0x1000
  );
}
