/**
 * The DeviceMapper client, end to end: written once, run against the fake binding (unit)
 * and against the real addon on a real kernel (VM, with and without udev).
 */
import { lstat } from 'node:fs/promises';
import { DeviceMapper, DmError, InvalidArgumentError, type NativeBinding } from '../../lib';
import { linear } from '../../lib/targets/linear';
import { snapshot, parseSnapshotStatus } from '../../lib/targets/snapshot';
import { snapshotOrigin } from '../../lib/targets/snapshot-origin';
import { zeroTarget } from '../../lib/targets/zero';
import { errorTarget } from '../../lib/targets/error';
import { sectors } from '../../lib/units';
import { removeTestDevices } from './cleanup';

export interface DeviceMapperEnvironment {
  binding(): NativeBinding;
  /** Options for DeviceMapper.open besides the binding (devDir, udev). */
  openOptions(): { devDir?: string; udev?: boolean | 'auto' };
  /** A block device of the given size (reads as zeros); returns its path. Cleaned up by the environment. */
  makeBlockDevice(sizeBytes: number): Promise<string>;
}

const MiB = 1024 * 1024;

export function deviceMapperSuite(env: DeviceMapperEnvironment): void {
  const prefix = `dmsnap-t${process.pid}-`;
  let dm: DeviceMapper;
  let counter = 0;
  const fresh = (what: string) => `${prefix}${what}-${counter++}`;

  const open = () => DeviceMapper.open({ binding: env.binding(), ...env.openOptions() });

  /** Removes every device this suite made, users first, resuming suspended ones. */
  async function cleanup(): Promise<void> {
    await removeTestDevices({
      list: async () => (await dm.list()).map((d) => d.name).filter((name) => name.startsWith(prefix)),
      settle: async (name) => {
        if ((await dm.find(name))?.suspended) await dm.resume(name);
      },
      remove: async (name) => void (await dm.remove(name, { retry: false })),
    });
  }

  async function nodeKind(name: string): Promise<'block' | 'link' | 'none' | 'other'> {
    const stats = await lstat(dm.devicePath(name)).catch(() => undefined);
    if (!stats) return 'none';
    if (stats.isBlockDevice()) return 'block';
    if (stats.isSymbolicLink()) return 'link';
    return 'other';
  }

  async function loopNumber(path: string) {
    return env.binding().statBlockDevice(path);
  }

  beforeEach(async () => {
    dm = await open();
  });

  afterEach(async () => {
    await cleanup();
    dm.close();
  });

  describe('create, load, resume, table, status, remove', () => {
    it('creates a linear device with a table, as dmsetup create does', async () => {
      const backing = await env.makeBlockDevice(8 * MiB);
      const { major, minor } = await loopNumber(backing);
      const name = fresh('linear');
      const info = await dm.create(name, { uuid: `${name}-uuid`, table: [linear({ length: sectors(16384), device: backing })] });
      expect(info).toMatchObject({ name, uuid: `${name}-uuid`, liveTable: true, inactiveTable: false, suspended: false, readOnly: false, targetCount: 1 });
      expect(await nodeKind(name)).not.toBe('none');
      expect(await dm.table(name)).toEqual([{ start: 0, length: 16384, type: 'linear', params: `${major}:${minor} 0` }]);
      expect(await dm.status(name)).toEqual([{ start: 0, length: 16384, type: 'linear', params: '' }]);
      expect(await dm.deps(name)).toEqual([{ major, minor }]);

      const removed = await dm.remove(name);
      expect(removed.name).toBe(name);
      expect(await dm.find(name)).toBeUndefined();
      expect(await nodeKind(name)).toBe('none');
    });

    it('accepts table text as dmsetup reads it', async () => {
      const backing = await env.makeBlockDevice(4 * MiB);
      const { major, minor } = await loopNumber(backing);
      const name = fresh('text');
      await dm.create(name, { table: `0 8 zero\n8 16 error\n24 100 linear ${backing} 2048\n` });
      expect(await dm.table(name)).toEqual([
        { start: 0, length: 8, type: 'zero', params: '' },
        { start: 8, length: 16, type: 'error', params: '' },
        { start: 24, length: 100, type: 'linear', params: `${major}:${minor} 2048` },
      ]);
    });

    it('loads into the inactive slot and swaps it in on resume', async () => {
      const name = fresh('slots');
      const created = await dm.create(name);
      expect(created).toMatchObject({ liveTable: false, inactiveTable: false });
      await dm.load(name, [zeroTarget({ length: sectors(64) })]);
      expect(await dm.info(name)).toMatchObject({ liveTable: false, inactiveTable: true });
      expect(await dm.table(name, { inactive: true })).toEqual([{ start: 0, length: 64, type: 'zero', params: '' }]);
      expect(await dm.info(name, { inactive: true })).toMatchObject({ targetCount: 1 });
      await dm.resume(name);
      expect(await dm.info(name)).toMatchObject({ liveTable: true, inactiveTable: false, targetCount: 1 });
      expect(await nodeKind(name)).not.toBe('none');

      await dm.load(name, [errorTarget({ length: sectors(32) })]);
      await dm.clear(name);
      expect(await dm.info(name)).toMatchObject({ liveTable: true, inactiveTable: false });
      expect(await dm.table(name)).toEqual([{ start: 0, length: 64, type: 'zero', params: '' }]);
    });

    it('loads read-only tables', async () => {
      const name = fresh('ro');
      const info = await dm.create(name, { table: [zeroTarget({ length: sectors(8) })], readOnly: true });
      expect(info.readOnly).toBe(true);
    });

    it('suspends and resumes', async () => {
      const name = fresh('suspend');
      await dm.create(name, { table: [zeroTarget({ length: sectors(8) })] });
      expect((await dm.suspend(name)).suspended).toBe(true);
      expect((await dm.info(name)).suspended).toBe(true);
      expect((await dm.resume(name)).suspended).toBe(false);
      expect((await dm.suspend(name, { skipLockfs: true, noFlush: true })).suspended).toBe(true);
      expect((await dm.resume(name)).suspended).toBe(false);
    });

    it('lists devices with their uuids, sorted by name', async () => {
      const a = fresh('list-b');
      const b = fresh('list-a');
      await dm.create(a, { uuid: `${a}-id` });
      await dm.create(b);
      const mine = (await dm.list()).filter((d) => d.name.startsWith(prefix));
      expect(mine.map((d) => d.name)).toEqual([a, b].sort());
      const first = mine.find((d) => d.name === a)!;
      const info = await dm.info(a);
      expect(first).toMatchObject({ major: info.major, minor: info.minor, uuid: `${a}-id`, eventNr: 0 });
      expect(mine.find((d) => d.name === b)!.uuid).toBeNull();
    });

    it('lists the target types with versions', async () => {
      const types = await dm.targets();
      for (const type of ['linear', 'zero', 'error', 'snapshot', 'snapshot-origin', 'snapshot-merge']) {
        const found = types.find((t) => t.name === type);
        expect(found?.text).toMatch(/^\d+\.\d+\.\d+$/);
      }
    });

    it('renames a device and moves its node; the rename is an event', async () => {
      const name = fresh('old');
      const renamed = fresh('new');
      await dm.create(name, { table: [zeroTarget({ length: sectors(8) })] });
      const before = await dm.info(name);
      const info = await dm.rename(name, renamed);
      expect(info.name).toBe(renamed);
      expect(await dm.find(name)).toBeUndefined();
      expect((await dm.info(renamed)).eventNr).toBe(before.eventNr + 1);
      expect(await nodeKind(name)).toBe('none');
      expect(await nodeKind(renamed)).not.toBe('none');
    });

    it('sets a uuid once, and only once', async () => {
      const name = fresh('uuid');
      await dm.create(name);
      await dm.setUuid(name, `${name}-set`);
      expect((await dm.info({ uuid: `${name}-set` })).name).toBe(name);
      const error = await dm.setUuid(name, `${name}-again`).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DmError);
      expect(error).toMatchObject({ code: 'EINVAL', ioctl: 'DM_DEV_RENAME' });
      expect((error as Error).message).toMatch(/cannot be changed/);
    });

    it('finds devices by name, uuid and device number', async () => {
      const name = fresh('refs');
      const created = await dm.create(name, { uuid: `${name}-u` });
      expect((await dm.info({ name })).minor).toBe(created.minor);
      expect((await dm.info({ uuid: `${name}-u` })).name).toBe(name);
      expect((await dm.info({ major: created.major, minor: created.minor })).name).toBe(name);
    });
  });

  describe('snapshot-origin and snapshot targets, by hand', () => {
    it('builds the seed procedure and reads snapshot usage', async () => {
      const origin = await env.makeBlockDevice(16 * MiB);
      const cow = await env.makeBlockDevice(4 * MiB);
      const size = sectors(32768);
      const wrapper = fresh('md2');
      const real = `${wrapper}-real`;
      const snap = `${wrapper}-snap`;
      await dm.create(wrapper, { table: [linear({ length: size, device: origin })] });
      const realInfo = await dm.create(real, { table: [linear({ length: size, device: origin })] });

      await dm.suspend(wrapper);
      const persistent = await dm.create(snap, {
        table: [snapshot({ length: size, origin: dm.devicePath(real), cow, chunkSectors: sectors(32) })],
      });
      await dm.load(wrapper, [snapshotOrigin({ length: size, origin: dm.devicePath(real) })]);
      await dm.resume(wrapper);

      const cowNumber = await loopNumber(cow);
      expect(await dm.table(wrapper)).toEqual([{ start: 0, length: 32768, type: 'snapshot-origin', params: `${realInfo.major}:${realInfo.minor}` }]);
      expect(await dm.table(snap)).toEqual([
        { start: 0, length: 32768, type: 'snapshot', params: `${realInfo.major}:${realInfo.minor} ${cowNumber.major}:${cowNumber.minor} P 32` },
      ]);
      const [line] = await dm.status(snap);
      const status = parseSnapshotStatus(line.params);
      expect(status.state).toBe('active');
      if (status.state === 'active') {
        expect(status.totalSectors).toBe(8192);
        expect(status.metadataSectors).toBeGreaterThan(0);
      }
      expect(persistent.liveTable).toBe(true);
      expect((await dm.deps(snap)).sort((a, b) => a.major - b.major || a.minor - b.minor)).toEqual(
        [{ major: realInfo.major, minor: realInfo.minor }, cowNumber].sort((a, b) => a.major - b.major || a.minor - b.minor),
      );

      // The -real device is held by both tables: removing it is refused.
      const busy = await dm.remove(real, { retry: false }).catch((e: unknown) => e);
      expect(busy).toMatchObject({ code: 'EBUSY', ioctl: 'DM_DEV_REMOVE' });
      expect((busy as Error).message).toMatch(/in use/);
      expect(await dm.find(real)).toBeDefined();

      // Tear down in reverse, restoring the linear table.
      await dm.suspend(wrapper);
      await dm.remove(snap);
      await dm.load(wrapper, await dm.table(real));
      await dm.resume(wrapper);
      expect(await dm.table(wrapper)).toEqual(await dm.table(real));
    });

    it('rejects a snapshot message with a clear error', async () => {
      const origin = await env.makeBlockDevice(4 * MiB);
      const cow = await env.makeBlockDevice(2 * MiB);
      const real = fresh('msg-real');
      const snap = fresh('msg-snap');
      await dm.create(real, { table: [linear({ length: sectors(8192), device: origin })] });
      await dm.create(snap, { table: [snapshot({ length: sectors(8192), origin: dm.devicePath(real), cow, persistent: false, chunkSectors: sectors(16) })] });
      expect((await dm.table(snap))[0].params).toMatch(/ N 16$/);
      const error = await dm.message(snap, 0, 'hello').catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'EINVAL', ioctl: 'DM_TARGET_MSG' });
      expect((error as Error).message).toMatch(/does not accept the message "hello"/);
    });

    it('removes a busy device deferred, when its last user goes', async () => {
      const origin = await env.makeBlockDevice(4 * MiB);
      const real = fresh('deferred-real');
      const user = fresh('deferred-user');
      await dm.create(real, { table: [linear({ length: sectors(8192), device: origin })] });
      await dm.create(user, { table: [linear({ length: sectors(8192), device: dm.devicePath(real) })] });
      const info = await dm.remove(real, { deferred: true });
      expect(info.deferredRemove).toBe(true);
      expect((await dm.info(real)).deferredRemove).toBe(true);
      await dm.remove(user);
      expect(await dm.find(real)).toBeUndefined();
    });
  });

  describe('events', () => {
    it('waits for the next event without blocking, and returns the new count', async () => {
      const name = fresh('wait');
      const renamed = fresh('waited');
      const created = await dm.create(name, { table: [zeroTarget({ length: sectors(8) })] });
      const waiting = dm.waitEvent({ major: created.major, minor: created.minor });
      let settled = false;
      void waiting.then(() => (settled = true));
      await new Promise((r) => setTimeout(r, 50));
      expect(settled).toBe(false);
      await dm.rename(name, renamed);
      const info = await waiting;
      expect(info.name).toBe(renamed);
      expect(info.eventNr).toBe(created.eventNr + 1);
    });

    it('returns at once when the counter already differs', async () => {
      const name = fresh('nowait');
      await dm.create(name, { table: [zeroTarget({ length: sectors(8) })] });
      const info = await dm.waitEvent(name, 41);
      expect(info.eventNr).toBe(0);
    });

    it('can be cancelled and timed out', async () => {
      const name = fresh('cancel');
      await dm.create(name, { table: [zeroTarget({ length: sectors(8) })] });
      const controller = new AbortController();
      const waiting = dm.waitEvent(name, undefined, { signal: controller.signal }).catch((e: unknown) => e);
      setTimeout(() => controller.abort(), 30);
      expect(await waiting).toMatchObject({ name: 'AbortError' });
      const timedOut = await dm.waitEvent(name, undefined, { timeoutMs: 50 }).catch((e: unknown) => e);
      expect(timedOut).toMatchObject({ name: 'TimeoutError' });
    });
  });

  describe('bad input', () => {
    it.each([
      ['a/b', /without '\/'/],
      ['.', /other than/],
      ['control', /other than/],
      ['', /1 to 127 bytes/],
      ['x'.repeat(128), /1 to 127 bytes/],
      ['has space', /white space/],
    ])('refuses the name %p before any ioctl', async (name, message) => {
      const error = await dm.create(name).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect((error as Error).message).toMatch(message);
    });

    it('accepts a 127-byte name and refuses a 129-byte uuid', async () => {
      const name = `${prefix}${'n'.repeat(127 - prefix.length)}`;
      expect((await dm.create(name)).name).toBe(name);
      await expect(dm.create(fresh('u'), { uuid: 'u'.repeat(129) })).rejects.toBeInstanceOf(InvalidArgumentError);
    });

    it('reports a duplicate name as EBUSY and changes nothing', async () => {
      const name = fresh('dup');
      await dm.create(name, { table: [zeroTarget({ length: sectors(8) })] });
      const error = await dm.create(name, { table: [errorTarget({ length: sectors(16) })] }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DmError);
      expect(error).toMatchObject({ code: 'EBUSY', errno: -16, syscall: 'ioctl', ioctl: 'DM_DEV_CREATE', device: name });
      expect(await dm.table(name)).toEqual([{ start: 0, length: 8, type: 'zero', params: '' }]);
    });

    it('reports an unknown device as ENXIO', async () => {
      const name = fresh('missing');
      await expect(dm.info(name)).rejects.toMatchObject({ code: 'ENXIO', ioctl: 'DM_DEV_STATUS', device: name });
      await expect(dm.remove(name)).rejects.toMatchObject({ code: 'ENXIO' });
      expect(await dm.find(name)).toBeUndefined();
    });

    it('reports a table the kernel rejects, and removes the half-made device', async () => {
      const name = fresh('rejected');
      const error = await dm.create(name, { table: '0 8 no-such-target foo' }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'EINVAL', ioctl: 'DM_TABLE_LOAD' });
      expect((error as Error).message).toContain('the kernel rejected the table "0 8 no-such-target foo"');
      expect(await dm.find(name)).toBeUndefined();
    });

    it('reports a missing device in a table', async () => {
      const name = fresh('nodev');
      const error = await dm.create(name, { table: '0 8 linear /dev/dmsnap-missing-disk 0' }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DmError);
      expect((error as DmError).ioctl).toBe('DM_TABLE_LOAD');
      expect(await dm.find(name)).toBeUndefined();
    });

    it('checks table shape before any ioctl', async () => {
      const name = fresh('gap');
      await expect(dm.create(name, { table: '0 8 zero\n16 8 zero' })).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(dm.create(name, { table: '1 8 zero' })).rejects.toBeInstanceOf(InvalidArgumentError);
      expect(await dm.find(name)).toBeUndefined();
    });
  });
}
