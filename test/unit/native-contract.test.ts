/**
 * The native contract suite against the fake binding, plus what only the fake can show:
 * the uevents it sent and their udev cookies, origin writes filling a snapshot, and
 * conditions that are hard to arrange on a real machine.
 */
import { nativeContractSuite } from '../shared/native-contract.suite';
import { createFakeSystem, type FakeSystem } from '../support/fake-binding';
import type { NativeControl, NativeTarget } from '../../lib/native';

const CONTROL = '/dev/mapper/control';
const MiB = 1024 * 1024;

let system: FakeSystem;
beforeEach(() => {
  system = createFakeSystem();
});

nativeContractSuite({
  binding: () => system.binding,
  makeBlockDevice: async (sizeBytes) => system.addLoopDevice(sizeBytes),
  controlPath: CONTROL,
});

describe('the fake device-mapper', () => {
  let control: NativeControl;
  const f = (name: string) => system.constants[name]!;

  beforeEach(async () => {
    control = await system.binding.openControl(CONTROL);
  });
  afterEach(() => control.close());

  async function activate(name: string, targets: NativeTarget[], flags = 0) {
    await control.create(name, '', 0);
    await control.load({ name }, targets, flags);
    return control.resume({ name }, 0, 0);
  }

  /** disk → NAME-real (linear) → NAME (snapshot-origin), with a snapshot per COW spec. */
  async function snapshotStack(diskBytes: number, cows: { bytes: number; store: string }[]) {
    const disk = system.addLoopDevice(diskBytes);
    const sectors = diskBytes / 512;
    const real = await activate('vol-real', [{ start: 0, length: sectors, type: 'linear', params: `${disk} 0` }]);
    const realNumber = `${real.major}:${real.minor}`;
    const snaps: string[] = [];
    for (const [i, cow] of cows.entries()) {
      const cowPath = system.addLoopDevice(cow.bytes);
      await activate(`vol-snap${i}`, [{ start: 0, length: sectors, type: 'snapshot', params: `${realNumber} ${cowPath} ${cow.store}` }]);
      snaps.push(`vol-snap${i}`);
    }
    await activate('vol', [{ start: 0, length: sectors, type: 'snapshot-origin', params: realNumber }]);
    return { disk, realNumber, snaps };
  }

  const status = async (name: string) => (await control.tableStatus({ name }, 0)).targets[0]!.params;

  describe('uevents and udev cookies', () => {
    it('records the uevents with the cookie each request carried', async () => {
      const disk = system.addLoopDevice(4 * MiB);
      await control.create('u', '', 0);
      await control.load({ name: 'u' }, [{ start: 0, length: 8192, type: 'linear', params: `${disk} 0` }], 0);
      expect(system.uevents).toEqual([{ action: 'add', name: 'u', minor: 0, cookie: 0 }]);

      const cookie = (0x0e << 16) | 0x1234;
      await control.resume({ name: 'u' }, 0, cookie);
      await control.rename({ name: 'u' }, 'v', 0, cookie + 1);
      const removed = await control.remove({ name: 'v' }, 0, cookie + 2);
      expect(system.uevents).toEqual([
        { action: 'add', name: 'u', minor: 0, cookie: 0 },
        { action: 'change', name: 'u', minor: 0, cookie },
        { action: 'change', name: 'v', minor: 0, cookie: cookie + 1 },
        { action: 'remove', name: 'v', minor: 0, cookie: cookie + 2 },
        { action: 'remove', name: 'v', minor: 0, cookie: 0 },
      ]);
      // DM_DEV_REMOVE answers with the header as it was sent: no device number, the cookie as event_nr.
      expect(removed).toMatchObject({ name: 'v', major: 0, minor: 0, eventNr: cookie + 2, openCount: 0 });
    });

    it('sends no uevent for a device that never had a table', async () => {
      await control.create('bare', '', 0);
      await control.rename({ name: 'bare' }, 'bare2', 0, 7);
      await control.remove({ name: 'bare2' }, 0, 8);
      expect(system.uevents).toEqual([]);
    });

    it('lets udev decrement the cookie of each uevent, so the wait ends', async () => {
      system.udevRunning = true;
      const disk = system.addLoopDevice(4 * MiB);
      await control.create('c', '', 0);
      await control.load({ name: 'c' }, [{ start: 0, length: 8192, type: 'linear', params: `${disk} 0` }], 0);
      const cookie = system.binding.udevCookieCreate();
      system.binding.udevCookieAdd(cookie.semid, 1);
      const resumed = await control.resume({ name: 'c' }, 0, (0x20 << 16) | cookie.base);
      expect(resumed.flags & f('DM_UEVENT_GENERATED_FLAG')).toBeTruthy();
      expect(system.semaphores.get(cookie.semid)).toBe(1);
      expect(await system.binding.udevCookieWait(cookie.semid, 1000)).toBe(true);
      expect(system.semaphores.has(cookie.semid)).toBe(false);
    });

    it('times out when udev does not run, and removes the semaphore', async () => {
      const disk = system.addLoopDevice(4 * MiB);
      await activate('d', [{ start: 0, length: 8192, type: 'linear', params: `${disk} 0` }]);
      await control.suspend({ name: 'd' }, 0);
      const cookie = system.binding.udevCookieCreate();
      system.binding.udevCookieAdd(cookie.semid, 1);
      await control.resume({ name: 'd' }, 0, cookie.base);
      expect(await system.binding.udevCookieWait(cookie.semid, 20)).toBe(false);
      expect(system.semaphores.has(cookie.semid)).toBe(false);
      expect(() => system.binding.udevCookieAdd(cookie.semid, 1)).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'semop' }));
    });

    it('fails a pending wait with EIDRM when the semaphore is destroyed', async () => {
      const cookie = system.binding.udevCookieCreate();
      system.binding.udevCookieAdd(cookie.semid, 1);
      const waiting = system.binding.udevCookieWait(cookie.semid, 1000);
      system.binding.udevCookieDestroy(cookie.semid);
      // EIDRM (43): lib/errors.ts has no name for it, so its code is 'E43'.
      await expect(waiting).rejects.toMatchObject({ errno: -43, syscall: 'semtimedop' });
    });
  });

  describe('writes through a snapshot origin', () => {
    it('fills persistent and transient snapshots until the COW is full', async () => {
      const { snaps } = await snapshotStack(64 * MiB, [
        { bytes: 16 * MiB, store: 'P 32' },
        { bytes: 16 * MiB, store: 'N 16' },
      ]);
      const [persistent, transient] = snaps as [string, string];
      expect(await status(persistent)).toBe('64/32768 64');
      expect(await status(transient)).toBe('0/32768 0');

      system.writeOrigin('vol', (3 * MiB) / 512);
      expect(await status(persistent)).toBe('6208/32768 64');
      expect(await status(transient)).toBe('6144/32768 0');
      // Chunks already copied are not copied again.
      system.writeOrigin('/dev/mapper/vol', 8, 100);
      expect(await status(persistent)).toBe('6208/32768 64');

      const watcher = await system.binding.openControl(CONTROL);
      await watcher.armPoll();
      const waiting = control.waitEvent({ name: persistent }, 0);
      system.writeOrigin('vol', (64 * MiB) / 512);
      expect(await status(persistent)).toBe('Invalid');
      expect(await status(transient)).toBe('Invalid');
      expect((await waiting).eventNr).toBe(1);
      expect((await control.info({ name: transient }, 0)).eventNr).toBe(1);
      expect(await watcher.pollReadable()).toBe(true);
      watcher.close();
    });

    it('starts a new metadata area every chunk*32 exceptions', async () => {
      const { snaps } = await snapshotStack(64 * MiB, [{ bytes: 32 * MiB, store: 'P 8' }]);
      // 4 KiB chunks: 256 exceptions per area; 300 copies skip the second area's chunk.
      system.writeOrigin('vol', 300 * 8);
      expect(await status(snaps[0]!)).toBe(`${303 * 8}/65536 24`);
    });

    it('does not copy for writes past the end of a shorter snapshot, nor for inactive ones', async () => {
      const disk = system.addLoopDevice(8 * MiB);
      const cow = system.addLoopDevice(4 * MiB);
      const real = await activate('r', [{ start: 0, length: 16384, type: 'linear', params: `${disk} 0` }]);
      const idleCow = system.addLoopDevice(4 * MiB);
      await activate('short', [{ start: 0, length: 64, type: 'snapshot', params: `254:${real.minor} ${cow} N 8` }]);
      await control.create('idle', '', 0);
      await control.load({ name: 'idle' }, [{ start: 0, length: 16384, type: 'snapshot', params: `254:${real.minor} ${idleCow} N 8` }], 0);
      system.writeOrigin('r', 1024);
      expect(await status('short')).toBe('64/8192 0');
      const idle = await control.tableStatus({ name: 'idle' }, f('DM_QUERY_INACTIVE_TABLE_FLAG'));
      expect(idle.targets[0]!.params).toBe('0/8192 0');
    });

    it('keeps persistent metadata across a reload until the COW is zeroed', async () => {
      const disk = system.addLoopDevice(8 * MiB);
      const cow = system.addLoopDevice(4 * MiB);
      const real = await activate('r', [{ start: 0, length: 16384, type: 'linear', params: `${disk} 0` }]);
      const table = [{ start: 0, length: 16384, type: 'snapshot', params: `254:${real.minor} ${cow} P 16` }];
      await activate('s', table);
      system.writeOrigin('r', 160);
      expect(await status('s')).toBe('192/8192 32');
      await control.remove({ name: 's' }, 0, 0);

      await activate('s', table);
      expect(await status('s')).toBe('192/8192 32');
      await control.remove({ name: 's' }, 0, 0);

      system.zeroDevice(cow);
      await activate('s', table);
      expect(await status('s')).toBe('32/8192 32');
    });

    it('hands the exceptions of a snapshot over to its reloaded table', async () => {
      const disk = system.addLoopDevice(8 * MiB);
      const cow = system.addLoopDevice(4 * MiB);
      const real = await activate('r', [{ start: 0, length: 16384, type: 'linear', params: `${disk} 0` }]);
      const table = [{ start: 0, length: 16384, type: 'snapshot', params: `254:${real.minor} ${cow} N 8` }];
      await activate('s', table);
      system.writeOrigin('r', 80);
      await control.load({ name: 's' }, table, 0);
      await control.resume({ name: 's' }, 0, 0);
      expect(await status('s')).toBe('80/8192 0');

      // Into another device, the source must be suspended first.
      await activate('t', [{ start: 0, length: 8, type: 'zero', params: '' }]);
      await control.load({ name: 't' }, table, 0);
      await expect(control.resume({ name: 't' }, 0, 0)).rejects.toMatchObject({ code: 'EINVAL', ioctl: 'DM_DEV_SUSPEND' });
    });

    it('overflows a PO snapshot written beyond its COW instead of invalidating it', async () => {
      const disk = system.addLoopDevice(8 * MiB);
      const cow = system.addLoopDevice(64 * 1024);
      const real = await activate('r', [{ start: 0, length: 16384, type: 'linear', params: `${disk} 0` }]);
      await activate('s', [{ start: 0, length: 16384, type: 'snapshot', params: `254:${real.minor} ${cow} PO 8` }]);
      expect((await control.tableStatus({ name: 's' }, f('DM_STATUS_TABLE_FLAG'))).targets[0]!.params).toBe(`254:${real.minor} 7:1 PO 8`);
      system.writeSnapshot('s', 16384);
      expect(await status('s')).toBe('Overflow');
      expect((await control.info({ name: 's' }, 0)).eventNr).toBe(0);
    });
  });

  describe('device numbers and opens', () => {
    it('gives the lowest free minor', async () => {
      await control.create('a', '', 0);
      await control.create('b', '', 0);
      await control.remove({ name: 'a' }, 0, 0);
      expect((await control.create('c', '', 0)).minor).toBe(0);
      expect((await control.create('d', '', 0)).minor).toBe(2);
    });

    it('counts one open per device-mapper device that holds it', async () => {
      await snapshotStack(8 * MiB, [{ bytes: 4 * MiB, store: 'P 8' }]);
      expect((await control.info({ name: 'vol-real' }, 0)).openCount).toBe(2);
      expect((await control.info({ name: 'vol' }, 0)).openCount).toBe(0);
    });

    it('removes a deferred device once a program closes it', async () => {
      const disk = system.addLoopDevice(4 * MiB);
      await activate('m', [{ start: 0, length: 8192, type: 'linear', params: `${disk} 0` }]);
      const close = system.openBlockDevice('/dev/mapper/m');
      await expect(control.remove({ name: 'm' }, 0, 0)).rejects.toMatchObject({ code: 'EBUSY' });
      await control.remove({ name: 'm' }, f('DM_DEFERRED_REMOVE'), 0);
      expect(system.devices.get('m')?.deferredRemove).toBe(true);
      close();
      await system.settle();
      expect(system.devices.has('m')).toBe(false);
      expect(system.uevents.at(-1)).toEqual({ action: 'remove', name: 'm', minor: 0, cookie: 0 });
    });

    it('keeps a mounted device out of tables (EBUSY)', async () => {
      const disk = system.addLoopDevice(4 * MiB);
      const unmount = system.openBlockDevice(disk, { exclusive: true });
      await control.create('x', '', 0);
      await expect(control.load({ name: 'x' }, [{ start: 0, length: 8192, type: 'linear', params: `${disk} 0` }], 0)).rejects.toMatchObject({
        code: 'EBUSY',
        ioctl: 'DM_TABLE_LOAD',
      });
      unmount();
      await control.load({ name: 'x' }, [{ start: 0, length: 8192, type: 'linear', params: `${disk} 0` }], 0);
      expect(() => system.openBlockDevice(disk, { exclusive: true })).toThrow(/in use/);
    });
  });

  describe('kernel differences and odd corners', () => {
    it('passes lookup errors on, as newer kernels do', async () => {
      system.tableDeviceLookupErrno = null;
      await control.create('n', '', 0);
      const load = (params: string) => control.load({ name: 'n' }, [{ start: 0, length: 8, type: 'linear', params }], 0);
      await expect(load('/dev/nothing 0')).rejects.toMatchObject({ code: 'ENOENT' });
      await expect(load('/dev/null 0')).rejects.toMatchObject({ code: 'ENOTBLK' });
      await expect(load('7:99 0')).rejects.toMatchObject({ code: 'ENXIO' });
      await expect(load('99999:0 0')).rejects.toMatchObject({ code: 'EOVERFLOW' });
    });

    it('resolves /dev/mapper/NAME and /dev/dm-N only once the device has a disk', async () => {
      const disk = system.addLoopDevice(4 * MiB);
      await control.create('lower', '', 0);
      await control.create('upper', '', 0);
      const load = (params: string) => control.load({ name: 'upper' }, [{ start: 0, length: 8, type: 'linear', params }], 0);
      await expect(load('/dev/mapper/lower 0')).rejects.toMatchObject({ code: 'ENODEV' });
      await expect(load('254:0 0')).rejects.toMatchObject({ code: 'ENXIO' });
      await activate('lower2', [{ start: 0, length: 8192, type: 'linear', params: `${disk} 0` }]);
      await load('/dev/mapper/lower2 0');
      await load('/dev/dm-2 0');
      expect((await control.deps({ name: 'upper' }, f('DM_QUERY_INACTIVE_TABLE_FLAG'))).devices).toEqual([[254, 2]]);
    });

    it('prints striped tables and status as the kernel does', async () => {
      const a = system.addLoopDevice(4 * MiB);
      const b = system.addLoopDevice(4 * MiB);
      await activate('st', [{ start: 0, length: 16384, type: 'striped', params: `2 128 ${a} 0 ${b} 0` }]);
      const table = await control.tableStatus({ name: 'st' }, f('DM_STATUS_TABLE_FLAG'));
      expect(table.targets[0]!.params).toBe('2 128 7:0 0 7:1 0');
      expect(await status('st')).toBe('2 7:0 7:1 1 AA');
      expect((await control.deps({ name: 'st' }, 0)).devices).toEqual([
        [7, 1],
        [7, 0],
      ]);
    });

    it('answers target messages through registered handlers', async () => {
      const disk = system.addLoopDevice(4 * MiB);
      await activate('msg', [{ start: 0, length: 8192, type: 'linear', params: `${disk} 0` }]);
      system.messageHandlers.set('linear', (argv) => (argv[0] === 'ping' ? `pong ${argv.slice(1).join(',')}` : { errno: 61 }));
      expect(await control.message({ name: 'msg' }, 0, 'ping a\\ b c')).toBe('pong a b,c');
      await expect(control.message({ name: 'msg' }, 0, 'other')).rejects.toMatchObject({ code: 'ENODATA' });
      await expect(control.message({ name: 'msg' }, 0, '   ')).rejects.toMatchObject({ code: 'EINVAL' });
      expect(await control.message({ name: 'msg' }, 0, '@stats_list')).toBe('');
    });

    it('makes block nodes, refusing existing paths and non-root callers', async () => {
      await system.binding.makeBlockNode('/dev/mapper/n', 254, 3, 0o600);
      expect(system.nodes.get('/dev/mapper/n')).toEqual({ major: 254, minor: 3, mode: 0o600 });
      expect(await system.binding.statBlockDevice('/dev/mapper/n')).toEqual({ major: 254, minor: 3 });
      await expect(system.binding.queryBlockDevice('/dev/mapper/n')).rejects.toMatchObject({ code: 'ENXIO', syscall: 'open' });
      await expect(system.binding.makeBlockNode('/dev/mapper/n', 254, 3, 0o600)).rejects.toMatchObject({ code: 'EEXIST', syscall: 'mknod' });
      system.unprivileged = true;
      await expect(system.binding.makeBlockNode('/dev/mapper/o', 254, 4, 0o600)).rejects.toMatchObject({ code: 'EPERM' });
    });
  });

  describe('failures of the descriptor', () => {
    it('fails every ioctl with EACCES for a caller without CAP_SYS_ADMIN', async () => {
      system.unprivileged = true;
      await expect(control.version()).rejects.toMatchObject({ code: 'EACCES', errno: -13, syscall: 'ioctl', ioctl: 'DM_VERSION', path: CONTROL });
      await expect(control.create('z', '', 0)).rejects.toMatchObject({ code: 'EACCES', ioctl: 'DM_DEV_CREATE', device: 'z' });
      await expect(control.listDevices()).rejects.toMatchObject({ code: 'EACCES', ioctl: 'DM_LIST_DEVICES' });
      await expect(system.binding.openControl(CONTROL)).rejects.toMatchObject({ code: 'EACCES', syscall: 'open' });
    });

    it('fails every call with EBADF once closed', async () => {
      const closed = await system.binding.openControl(CONTROL);
      expect(system.openControls).toBe(2);
      closed.close();
      expect(closed.closed).toBe(true);
      expect(system.openControls).toBe(1);
      const calls: [Promise<unknown>, string][] = [
        [closed.version(), 'DM_VERSION'],
        [closed.listDevices(), 'DM_LIST_DEVICES'],
        [closed.listVersions(), 'DM_LIST_VERSIONS'],
        [closed.create('e', '', 0), 'DM_DEV_CREATE'],
        [closed.remove({ name: 'e' }, 0, 0), 'DM_DEV_REMOVE'],
        [closed.rename({ name: 'e' }, 'f', 0, 0), 'DM_DEV_RENAME'],
        [closed.suspend({ name: 'e' }, 0), 'DM_DEV_SUSPEND'],
        [closed.resume({ name: 'e' }, 0, 0), 'DM_DEV_SUSPEND'],
        [closed.info({ name: 'e' }, 0), 'DM_DEV_STATUS'],
        [closed.waitEvent({ name: 'e' }, 0), 'DM_DEV_WAIT'],
        [closed.load({ name: 'e' }, [], 0), 'DM_TABLE_LOAD'],
        [closed.clear({ name: 'e' }), 'DM_TABLE_CLEAR'],
        [closed.deps({ name: 'e' }, 0), 'DM_TABLE_DEPS'],
        [closed.tableStatus({ name: 'e' }, 0), 'DM_TABLE_STATUS'],
        [closed.message({ name: 'e' }, 0, 'x'), 'DM_TARGET_MSG'],
        [closed.armPoll(), 'DM_DEV_ARM_POLL'],
      ];
      for (const [call, ioctl] of calls) {
        await expect(call).rejects.toMatchObject({ code: 'EBADF', errno: -9, syscall: 'ioctl', ioctl, path: CONTROL });
      }
      await expect(closed.pollReadable()).rejects.toMatchObject({ code: 'EBADF', syscall: 'poll' });
      closed.cancelPoll();
    });
  });
});
