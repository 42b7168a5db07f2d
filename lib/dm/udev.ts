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
  /** Skip the subsystem rules (LVM's, for instance) but not the dm rules. */
  disableSubsystemRules: 0x0002,
  /** Skip the disk rules: no blkid probe, no /dev/disk/by-* links (for private layers). */
  disableDiskRules: 0x0004,
  /** Skip the rules of other packages, neither dm nor subsystem rules. */
  disableOtherRules: 0x0008,
  /**
   * Low priority for this device's symlinks: where another device has the same filesystem
   * UUID (an origin and its snapshot), the other's links win.
   */
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

/** How /dev/mapper is kept in step: through udev, or by dmsnap itself. */
export interface NodeSyncOptions {
  /** Use the udev cookie protocol: 'auto' (default) when udev is running. */
  udev?: boolean | 'auto';
  /** Bound on each wait for udev, in milliseconds. */
  udevTimeoutMs?: number;
  /** The directory of device nodes, normally /dev/mapper. */
  devDir?: string;
}

/**
 * Keeps /dev/mapper/NAME in step with the kernel for one client: waits for udev through
 * cookies, or makes and removes the nodes itself when udev is not running or does not
 * answer in time.
 */
export class NodeSync {
  /** Whether the udev cookie protocol is in use. */
  readonly udev: boolean;
  /** Bound on each wait for udev, in milliseconds. */
  readonly udevTimeoutMs: number;
  /** The directory of device nodes, normally /dev/mapper. */
  readonly devDir: string;

  constructor(
    private readonly binding: NativeBinding,
    options: NodeSyncOptions = {},
  ) {
    this.udev = options.udev === undefined || options.udev === 'auto' ? udevIsRunning() : options.udev;
    this.udevTimeoutMs = options.udevTimeoutMs ?? DEFAULT_UDEV_TIMEOUT_MS;
    this.devDir = options.devDir ?? DEFAULT_DEV_DIR;
  }

  /** The path of device NAME's node: /dev/mapper/NAME. */
  nodePath(name: string): string {
    return join(this.devDir, name);
  }

  /**
   * Runs an ioctl that may send a uevent (RESUME, REMOVE, RENAME) with a udev cookie,
   * then waits for udev to finish with it. Returns whether udev answered in time
   * (always true without udev). Within a batch, the wait is left to the batch's end.
   */
  async withCookie(
    extraFlags: number,
    op: (eventNr: number) => Promise<NativeDeviceInfo>,
    batch?: UdevBatch,
  ): Promise<{ info: NativeDeviceInfo; udevSynced: boolean }> {
    if (!this.udev) return { info: await op(0), udevSynced: true };
    if (batch) return { info: await batch.run(extraFlags, op), udevSynced: true };
    const own = this.batch();
    let info: NativeDeviceInfo;
    try {
      info = await own.run(extraFlags, op);
    } catch (error) {
      // A failed ioctl sent no uevent: no udev rule will ever touch this cookie.
      own.discard();
      throw error;
    }
    return { info, udevSynced: await own.finish() };
  }

  /**
   * A cookie shared by several ioctls whose uevents are waited for once, at the end, as
   * libdevmapper does for a whole activation: nothing waits for udev between them.
   */
  batch(): UdevBatch {
    return new UdevBatch(this);
  }

  /** @internal */
  waitCookie(semid: number, names: string[]): Promise<boolean> {
    return callNative(() => this.binding.udevCookieWait(semid, this.udevTimeoutMs)).then((synced) => {
      if (!synced) {
        process.emitWarning(
          `udev did not confirm the uevents of device-mapper device ${names.map((n) => `"${n}"`).join(', ')} within ${this.udevTimeoutMs} ms; ` +
            `check that the dm udev rules (95-dm-notify.rules) are installed. dmsnap manages the /dev/mapper nodes itself this time.`,
          { code: 'DMSNAP_UDEV_TIMEOUT' },
        );
      }
      return synced;
    });
  }

  /** @internal */
  get nativeBinding(): NativeBinding {
    return this.binding;
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

  /**
   * Removes /dev/mapper/NAME if it is a block node or a link (never any other file). With
   * udev in step, udev removes its own link; a block node for the removed device is dmsnap's
   * own (made when udev did not answer in time) and is removed all the same, so that it never
   * outlives its device.
   */
  async removeNode(name: string, udevSynced: boolean, removed?: { major: number; minor: number }): Promise<void> {
    const path = this.nodePath(name);
    const existing = await fs.lstat(path).catch(() => undefined);
    if (!existing) return;
    if (this.udev && udevSynced) {
      const ours = removed !== undefined && existing.isBlockDevice() && existing.rdev === makeDev(removed.major, removed.minor);
      if (!ours) return;
    } else if (!existing.isBlockDevice() && !existing.isSymbolicLink()) {
      return;
    }
    await fs.unlink(path).catch(() => undefined);
  }
}

/** One udev cookie across several ioctls; see NodeSync.batch(). */
export class UdevBatch {
  private cookie?: { base: number; semid: number };
  private readonly names: string[] = [];
  private readonly pendingNodes: { name: string; major: number; minor: number }[] = [];

  constructor(private readonly nodes: NodeSync) {}

  /**
   * Runs one ioctl under the batch's cookie (no waiting). Its count on the cookie is
   * taken back when it sends no uevent, also when it fails: the other calls of the
   * batch are still waited for at finish().
   */
  async run(extraFlags: number, op: (eventNr: number) => Promise<NativeDeviceInfo>): Promise<NativeDeviceInfo> {
    const slot = this.reserve(extraFlags);
    let info: NativeDeviceInfo;
    try {
      info = await op(slot.eventNr);
    } catch (error) {
      slot.settle();
      throw error;
    }
    slot.settle(info);
    return info;
  }

  /**
   * The batch's cookie for one ioctl made elsewhere (several in one native call):
   * `settle` once with what the ioctl returned, or with nothing if it failed or never ran.
   */
  reserve(extraFlags: number): { eventNr: number; settle(info?: NativeDeviceInfo): void } {
    if (!this.nodes.udev) return { eventNr: 0, settle: () => undefined };
    const binding = this.nodes.nativeBinding;
    this.cookie ??= binding.udevCookieCreate();
    const { base, semid } = this.cookie;
    binding.udevCookieAdd(semid, 1);
    const flags = UdevFlags.primarySource | UdevFlags.disableLibraryFallback | extraFlags;
    return {
      eventNr: ((flags << 16) | base) >>> 0,
      settle: (info) => {
        if (!info || !(info.flags & binding.constants.DM_UEVENT_GENERATED_FLAG)) this.takeBack(semid);
        if (info) this.names.push(info.name);
      },
    };
  }

  /**
   * Removes the cookie's semaphore without waiting (for a batch whose calls all failed
   * or sent no uevent). finish() then only makes the pending nodes.
   */
  discard(): void {
    if (!this.cookie) return;
    const { semid } = this.cookie;
    this.cookie = undefined;
    this.nodes.nativeBinding.udevCookieDestroy(semid);
  }

  /**
   * Undoes one call's count. A failure here (the value is already 0) must not hide the
   * ioctl's own result: finish() or discard() removes the semaphore in any case.
   */
  private takeBack(semid: number): void {
    try {
      this.nodes.nativeBinding.udevCookieAdd(semid, -1);
    } catch {
      // nothing to undo
    }
  }

  /** A node to make after the wait, if udev does not (see NodeSync.ensureNode). */
  ensureNodeLater(name: string, major: number, minor: number): void {
    this.pendingNodes.push({ name, major, minor });
  }

  /** Waits once for udev to process every uevent of the batch; then makes pending nodes. */
  async finish(): Promise<boolean> {
    let synced = true;
    if (this.cookie) {
      const { semid } = this.cookie;
      this.cookie = undefined;
      synced = await this.nodes.waitCookie(semid, this.names);
    }
    for (const node of this.pendingNodes.splice(0)) await this.nodes.ensureNode(node.name, node.major, node.minor, synced);
    return synced;
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
