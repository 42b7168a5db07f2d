/**
 * The NativeBinding / NativeControl contract, called directly (no DeviceMapper client),
 * with what a real kernel answers: run against the fake binding in unit tests and against
 * the real addon and real loop devices in the VM. Every device a test creates is named
 * with this process's prefix and removed after the test.
 */
import { DmError, SyscallError } from '../../lib/errors';
import type { NativeBinding, NativeControl, NativeDeviceInfo, NativeDeviceRef, NativeTarget } from '../../lib/native';
import { removeTestDevices } from './cleanup';

export interface NativeContractEnvironment {
  /** The binding under test. */
  binding(): NativeBinding;
  /** Makes a block device (a fresh sparse loop device: it reads as zeros); returns its path. Cleaned up by the environment. */
  makeBlockDevice(sizeBytes: number): Promise<string>;
  /** The device-mapper control node. */
  controlPath: string;
  /**
   * The code DM_TABLE_LOAD fails with when a table names a missing path. Default: ENODEV
   * up to interface 4.47 (Linux 6.1, which maps every failed lookup to ENODEV), else
   * ENOENT (newer kernels pass lookup_bdev's error on).
   */
  missingTableDeviceCode?: string;
  /**
   * Whether the kernel adds a device's gendisk when the device is created (before Linux
   * 5.15, e.g. 5.10) rather than at its first table load: then removing or renaming a
   * device that never had a table sends a uevent too. Default false (the fake models 6.1).
   */
  gendiskAtCreate?: boolean;
}

const MiB = 1024 * 1024;

export function nativeContractSuite(env: NativeContractEnvironment): void {
  const prefix = `dmsnap-contract-${process.pid}-`;
  let sequence = 0;
  /** A fresh device name for this test run. */
  const unique = (tag: string) => `${prefix}${tag}-${++sequence}`;

  let control: NativeControl;
  const flag = (name: string): number => {
    const value = env.binding().constants[name];
    if (typeof value !== 'number') throw new Error(`the binding does not define ${name}`);
    return value;
  };
  const has = (flags: number, name: string) => (flags & flag(name)) !== 0;

  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  /** The rejection of a call that must fail. */
  async function failure(call: Promise<unknown>): Promise<DmError> {
    const outcome = await call.then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    );
    if (!('error' in outcome)) throw new Error(`expected a failure, got ${JSON.stringify(outcome.value)}`);
    expect(outcome.error).toBeInstanceOf(DmError);
    return outcome.error as DmError;
  }

  function expectIoctlError(error: DmError, code: string, errno: number, ioctl: string, device?: string): void {
    expect(error).toMatchObject({ code, errno: -errno, syscall: 'ioctl', ioctl, path: env.controlPath });
    if (device !== undefined) expect(error.device).toBe(device);
  }

  async function sizeInSectors(path: string): Promise<number> {
    return (await env.binding().queryBlockDevice(path)).sizeBytes / 512;
  }

  async function deviceNumber(path: string): Promise<string> {
    const { major, minor } = await env.binding().statBlockDevice(path);
    return `${major}:${minor}`;
  }

  /** create + load + resume: an active device. */
  async function activate(name: string, targets: NativeTarget[], flags = 0): Promise<NativeDeviceInfo> {
    await control.create(name, '', 0);
    await control.load({ name }, targets, flags);
    return control.resume({ name }, 0, 0);
  }

  /** A linear device over the whole of a block device. */
  async function linearOver(name: string, path: string): Promise<NativeDeviceInfo> {
    return activate(name, [{ start: 0, length: await sizeInSectors(path), type: 'linear', params: `${path} 0` }]);
  }

  /** Removes a device, retrying while something (udev's probe) holds it open a moment. */
  async function removeSoon(ref: NativeDeviceRef): Promise<NativeDeviceInfo> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await control.remove(ref, 0, 0);
      } catch (error) {
        if ((error as DmError).code !== 'EBUSY' || attempt >= 40) throw error;
        await sleep(50);
      }
    }
  }

  /** Polls until the device is gone (deferred removal runs on a kernel workqueue). */
  async function gone(name: string): Promise<boolean> {
    for (let attempt = 0; attempt < 100; attempt++) {
      const code = await control.info({ name }, 0).then(
        () => undefined,
        (error: DmError) => error.code,
      );
      if (code === 'ENXIO') return true;
      await sleep(50);
    }
    return false;
  }

  async function removeOurDevices(): Promise<void> {
    await removeTestDevices(
      {
        list: async () => (await control.listDevices()).map((entry) => entry.name).filter((name) => name.startsWith(prefix)),
        settle: async (name) => {
          const info = await control.info({ name }, 0);
          if (!has(info.flags, 'DM_SUSPEND_FLAG')) return;
          if (has(info.flags, 'DM_INACTIVE_PRESENT_FLAG')) await control.clear({ name }).catch(() => undefined);
          await control.resume({ name }, 0, 0);
        },
        remove: async (name) => void (await control.remove({ name }, 0, 0)),
      },
      40,
      50,
    );
  }

  describe('native contract', () => {
    beforeEach(async () => {
      control = await env.binding().openControl(env.controlPath);
    });

    afterEach(async () => {
      try {
        await removeOurDevices();
      } finally {
        control.close();
      }
    });

    describe('DM_VERSION and DM_LIST_VERSIONS', () => {
      it('reports interface version 4.x', async () => {
        const [major, minor, patch] = await control.version();
        expect(major).toBe(4);
        expect(minor).toBeGreaterThanOrEqual(37);
        expect(Number.isInteger(patch)).toBe(true);
      });

      it('lists the linear and snapshot target types', async () => {
        const versions = await control.listVersions();
        const byName = new Map(versions.map((v) => [v.name, v.version]));
        for (const name of ['linear', 'error', 'snapshot', 'snapshot-origin', 'snapshot-merge']) {
          expect(byName.get(name)).toEqual([expect.any(Number), expect.any(Number), expect.any(Number)]);
        }
        expect(byName.get('linear')![0]).toBe(1);
        expect(byName.get('snapshot')![0]).toBe(1);
        expect(byName.get('snapshot')![1]).toBeGreaterThanOrEqual(16);
      });
    });

    describe('the life of a linear device', () => {
      it('goes from created to loaded to active, through suspend and resume, to removed', async () => {
        const loop = await env.makeBlockDevice(8 * MiB);
        const loopNumber = await deviceNumber(loop);
        const name = unique('life');
        const ref = { name };

        const created = await control.create(name, '', 0);
        expect(created).toMatchObject({ name, uuid: '', openCount: 0, eventNr: 0, targetCount: 0 });
        expect(created.major).toBeGreaterThan(0);
        for (const f of ['DM_ACTIVE_PRESENT_FLAG', 'DM_INACTIVE_PRESENT_FLAG', 'DM_SUSPEND_FLAG', 'DM_READONLY_FLAG']) {
          expect(has(created.flags, f)).toBe(false);
        }

        const fresh = await control.info(ref, 0);
        expect(fresh).toMatchObject({ name, major: created.major, minor: created.minor, targetCount: 0, eventNr: 0 });
        expect(has(fresh.flags, 'DM_ACTIVE_PRESENT_FLAG')).toBe(false);
        expect(has(fresh.flags, 'DM_INACTIVE_PRESENT_FLAG')).toBe(false);

        const loaded = await control.load(ref, [{ start: 0, length: 16384, type: 'linear', params: `${loop} 0` }], 0);
        expect(has(loaded.flags, 'DM_INACTIVE_PRESENT_FLAG')).toBe(true);
        expect(has(loaded.flags, 'DM_ACTIVE_PRESENT_FLAG')).toBe(false);
        expect(loaded.targetCount).toBe(0);

        const inactive = await control.info(ref, flag('DM_QUERY_INACTIVE_TABLE_FLAG'));
        expect(inactive.targetCount).toBe(1);
        expect(has(inactive.flags, 'DM_INACTIVE_PRESENT_FLAG')).toBe(true);
        const inactiveTable = await control.tableStatus(ref, flag('DM_QUERY_INACTIVE_TABLE_FLAG') | flag('DM_STATUS_TABLE_FLAG'));
        expect(inactiveTable.targets).toEqual([{ start: 0, length: 16384, type: 'linear', params: `${loopNumber} 0` }]);
        expect((await control.tableStatus(ref, flag('DM_STATUS_TABLE_FLAG'))).targets).toEqual([]);

        const resumed = await control.resume(ref, 0, 0);
        expect(has(resumed.flags, 'DM_ACTIVE_PRESENT_FLAG')).toBe(true);
        expect(has(resumed.flags, 'DM_INACTIVE_PRESENT_FLAG')).toBe(false);
        expect(has(resumed.flags, 'DM_SUSPEND_FLAG')).toBe(false);
        expect(has(resumed.flags, 'DM_UEVENT_GENERATED_FLAG')).toBe(true);
        expect(resumed.targetCount).toBe(1);
        expect(resumed.eventNr).toBe(0);

        const table = await control.tableStatus(ref, flag('DM_STATUS_TABLE_FLAG'));
        expect(table.targets).toEqual([{ start: 0, length: 16384, type: 'linear', params: `${loopNumber} 0` }]);
        expect(table.info.targetCount).toBe(1);
        const status = await control.tableStatus(ref, 0);
        expect(status.targets).toEqual([{ start: 0, length: 16384, type: 'linear', params: '' }]);

        const suspended = await control.suspend(ref, 0);
        expect(has(suspended.flags, 'DM_SUSPEND_FLAG')).toBe(true);
        expect(has((await control.suspend(ref, flag('DM_SKIP_LOCKFS_FLAG'))).flags, 'DM_SUSPEND_FLAG')).toBe(true);
        expect(has((await control.info(ref, 0)).flags, 'DM_SUSPEND_FLAG')).toBe(true);

        const again = await control.resume(ref, 0, 0);
        expect(has(again.flags, 'DM_SUSPEND_FLAG')).toBe(false);
        expect(has(again.flags, 'DM_UEVENT_GENERATED_FLAG')).toBe(true);
        const idle = await control.resume(ref, 0, 0);
        expect(has(idle.flags, 'DM_UEVENT_GENERATED_FLAG')).toBe(false);

        const { info, devices } = await control.deps(ref, 0);
        expect(info.name).toBe(name);
        expect(devices.map(([major, minor]) => `${major}:${minor}`)).toEqual([loopNumber]);

        const removed = await removeSoon(ref);
        expect(removed.name).toBe(name);
        expect(has(removed.flags, 'DM_UEVENT_GENERATED_FLAG')).toBe(true);
        expectIoctlError(await failure(control.info(ref, 0)), 'ENXIO', 6, 'DM_DEV_STATUS', name);
        expect((await control.listDevices()).some((entry) => entry.name === name)).toBe(false);
      });

      it('finds a device by uuid and by device number', async () => {
        const name = unique('find');
        const uuid = `${prefix}uuid-${sequence}`;
        const created = await control.create(name, uuid, 0);
        expect(created.uuid).toBe(uuid);
        expect((await control.info({ uuid }, 0)).name).toBe(name);
        expect((await control.info({ major: created.major, minor: created.minor }, 0)).name).toBe(name);
        expect((await control.info({ name }, 0)).uuid).toBe(uuid);
      });

      it('marks a table loaded read-only, and the device once it is live', async () => {
        const loop = await env.makeBlockDevice(4 * MiB);
        const name = unique('ro');
        await control.create(name, '', 0);
        const loaded = await control.load({ name }, [{ start: 0, length: 8192, type: 'linear', params: `${loop} 0` }], flag('DM_READONLY_FLAG'));
        expect(has(loaded.flags, 'DM_READONLY_FLAG')).toBe(false);
        expect(has((await control.info({ name }, flag('DM_QUERY_INACTIVE_TABLE_FLAG'))).flags, 'DM_READONLY_FLAG')).toBe(true);
        const resumed = await control.resume({ name }, 0, 0);
        expect(has(resumed.flags, 'DM_READONLY_FLAG')).toBe(true);
      });

      it('drops an inactive table with DM_TABLE_CLEAR', async () => {
        const loop = await env.makeBlockDevice(4 * MiB);
        const name = unique('clear');
        await control.create(name, '', 0);
        await control.load({ name }, [{ start: 0, length: 8192, type: 'linear', params: `${loop} 0` }], 0);
        const cleared = await control.clear({ name });
        expect(has(cleared.flags, 'DM_INACTIVE_PRESENT_FLAG')).toBe(false);
        expect(has((await control.info({ name }, 0)).flags, 'DM_INACTIVE_PRESENT_FLAG')).toBe(false);
      });

      it('cannot resume a suspended device that never had a table (EINVAL)', async () => {
        const name = unique('empty');
        await control.create(name, '', 0);
        expect(has((await control.suspend({ name }, 0)).flags, 'DM_SUSPEND_FLAG')).toBe(true);
        expectIoctlError(await failure(control.resume({ name }, 0, 0)), 'EINVAL', 22, 'DM_DEV_SUSPEND', name);
        expect(has((await control.info({ name }, 0)).flags, 'DM_SUSPEND_FLAG')).toBe(true);
      });

      it('sends no uevent when removing a device that never had a table (but where its gendisk came at create)', async () => {
        const name = unique('bare');
        await control.create(name, '', 0);
        const removed = await control.remove({ name }, 0, 0);
        expect(has(removed.flags, 'DM_UEVENT_GENERATED_FLAG')).toBe(env.gendiskAtCreate === true);
        expectIoctlError(await failure(control.info({ name }, 0)), 'ENXIO', 6, 'DM_DEV_STATUS', name);
      });
    });

    describe('DM_DEV_RENAME', () => {
      it('renames, counts an event, and sets a uuid once', async () => {
        const loop = await env.makeBlockDevice(4 * MiB);
        const name = unique('old');
        const other = unique('other');
        const created = await linearOver(name, loop);
        await control.create(other, '', 0);
        expect((await control.info({ name }, 0)).eventNr).toBe(0);

        const newName = unique('new');
        const renamed = await control.rename({ name }, newName, 0, 0);
        // The reply's name field is the one the request carried.
        expect(renamed.name).toBe(name);
        expect(renamed.eventNr).toBe(1);
        expect(has(renamed.flags, 'DM_UEVENT_GENERATED_FLAG')).toBe(true);
        expectIoctlError(await failure(control.info({ name }, 0)), 'ENXIO', 6, 'DM_DEV_STATUS', name);
        const after = await control.info({ name: newName }, 0);
        expect(after).toMatchObject({ name: newName, minor: created.minor, eventNr: 1 });

        expectIoctlError(await failure(control.rename({ name: newName }, other, 0, 0)), 'EBUSY', 16, 'DM_DEV_RENAME', newName);
        expectIoctlError(await failure(control.rename({ name: newName }, 'a/b', 0, 0)), 'EINVAL', 22, 'DM_DEV_RENAME', newName);

        const uuid = `${prefix}uuid-${sequence}`;
        const withUuid = await control.rename({ name: newName }, uuid, flag('DM_UUID_FLAG'), 0);
        expect(withUuid.eventNr).toBe(2);
        expect((await control.info({ name: newName }, 0)).uuid).toBe(uuid);
        expect((await control.info({ uuid }, 0)).name).toBe(newName);
        expectIoctlError(await failure(control.rename({ name: newName }, `${uuid}-2`, flag('DM_UUID_FLAG'), 0)), 'EINVAL', 22, 'DM_DEV_RENAME', newName);
        expectIoctlError(await failure(control.rename({ name: other }, uuid, flag('DM_UUID_FLAG'), 0)), 'EBUSY', 16, 'DM_DEV_RENAME', other);

        // From interface 4.45 the list says each device's uuid (null: none); before, it does not say.
        const [, minor] = await control.version();
        const listsUuids = minor >= 45;
        const listed = (await control.listDevices()).find((entry) => entry.name === newName);
        expect(listed).toEqual({ name: newName, major: created.major, minor: created.minor, eventNr: 2, ...(listsUuids ? { uuid } : {}) });
        const plain = (await control.listDevices()).find((entry) => entry.name === other);
        expect(plain).toEqual({ name: other, major: plain?.major, minor: plain?.minor, eventNr: 0, ...(listsUuids ? { uuid: null } : {}) });
      });

      it('looks the device up by name only (ENXIO by uuid)', async () => {
        const name = unique('byuuid');
        const uuid = `${prefix}uuid-${sequence}`;
        await control.create(name, uuid, 0);
        const error = await failure(control.rename({ uuid }, unique('never'), 0, 0));
        expect(error).toMatchObject({ code: 'ENXIO', ioctl: 'DM_DEV_RENAME' });
      });

      it('counts no event for a device without a live table', async () => {
        const name = unique('quiet');
        await control.create(name, '', 0);
        const newName = unique('quiet');
        const renamed = await control.rename({ name }, newName, 0, 0);
        expect(renamed.eventNr).toBe(0);
        expect(has(renamed.flags, 'DM_UEVENT_GENERATED_FLAG')).toBe(env.gendiskAtCreate === true);
      });
    });

    describe('DM_DEV_CREATE and lookups that fail', () => {
      it('refuses a name or uuid in use (EBUSY) and a name with a slash (EINVAL)', async () => {
        const name = unique('dup');
        const uuid = `${prefix}uuid-${sequence}`;
        await control.create(name, uuid, 0);
        expectIoctlError(await failure(control.create(name, '', 0)), 'EBUSY', 16, 'DM_DEV_CREATE', name);
        const second = unique('dup');
        expectIoctlError(await failure(control.create(second, uuid, 0)), 'EBUSY', 16, 'DM_DEV_CREATE', second);
        expectIoctlError(await failure(control.create(`${prefix}a/b`, '', 0)), 'EINVAL', 22, 'DM_DEV_CREATE', `${prefix}a/b`);
      });

      it('fails with ENXIO for a device that does not exist', async () => {
        const name = unique('missing');
        const ref = { name };
        expectIoctlError(await failure(control.info(ref, 0)), 'ENXIO', 6, 'DM_DEV_STATUS', name);
        expectIoctlError(await failure(control.remove(ref, 0, 0)), 'ENXIO', 6, 'DM_DEV_REMOVE', name);
        expectIoctlError(await failure(control.suspend(ref, 0)), 'ENXIO', 6, 'DM_DEV_SUSPEND', name);
        expectIoctlError(await failure(control.resume(ref, 0, 0)), 'ENXIO', 6, 'DM_DEV_SUSPEND', name);
        expectIoctlError(await failure(control.load(ref, [{ start: 0, length: 8, type: 'zero', params: '' }], 0)), 'ENXIO', 6, 'DM_TABLE_LOAD', name);
        expectIoctlError(await failure(control.tableStatus(ref, 0)), 'ENXIO', 6, 'DM_TABLE_STATUS', name);
        expectIoctlError(await failure(control.deps(ref, 0)), 'ENXIO', 6, 'DM_TABLE_DEPS', name);
        expectIoctlError(await failure(control.rename(ref, unique('x'), 0, 0)), 'ENXIO', 6, 'DM_DEV_RENAME', name);
        expect((await failure(control.info({ uuid: `${prefix}no-such-uuid` }, 0))).code).toBe('ENXIO');
      });
    });

    describe('DM_TABLE_LOAD validation', () => {
      it('refuses bad tables and keeps no inactive table', async () => {
        const loop = await env.makeBlockDevice(4 * MiB);
        const name = unique('bad');
        const ref = { name };
        await control.create(name, '', 0);
        const [, minor] = await control.version();
        const missingCode = env.missingTableDeviceCode ?? (minor <= 47 ? 'ENODEV' : 'ENOENT');
        const cases: [NativeTarget[], string][] = [
          [[{ start: 0, length: 8192, type: 'dmsnap-no-such-type', params: '' }], 'EINVAL'],
          [
            [
              { start: 0, length: 4096, type: 'linear', params: `${loop} 0` },
              { start: 4104, length: 4088, type: 'linear', params: `${loop} 4096` },
            ],
            'EINVAL',
          ],
          [[{ start: 8, length: 8184, type: 'linear', params: `${loop} 0` }], 'EINVAL'],
          [[], 'EINVAL'],
          [[{ start: 0, length: 8192, type: 'linear', params: `${loop}` }], 'EINVAL'],
          [[{ start: 0, length: 8192, type: 'linear', params: `${loop} x` }], 'EINVAL'],
          [[{ start: 0, length: 8192, type: 'zero', params: 'extra' }], 'EINVAL'],
          [[{ start: 0, length: 8192, type: 'linear', params: '/dev/dmsnap-no-such-device 0' }], missingCode],
          // The first table of a device must fit on its devices.
          [[{ start: 0, length: 8200, type: 'linear', params: `${loop} 0` }], 'EINVAL'],
        ];
        for (const [targets, code] of cases) {
          const error = await failure(control.load(ref, targets, 0));
          expect({ targets, code: error.code, ioctl: error.ioctl, device: error.device }).toEqual({ targets, code, ioctl: 'DM_TABLE_LOAD', device: name });
          expect(has((await control.info(ref, 0)).flags, 'DM_INACTIVE_PRESENT_FLAG')).toBe(false);
        }
      });

      it('checks a later table against its devices at resume, leaving the device suspended', async () => {
        const loop = await env.makeBlockDevice(4 * MiB);
        const name = unique('grow');
        await linearOver(name, loop);
        await control.load({ name }, [{ start: 0, length: 16384, type: 'linear', params: `${loop} 0` }], 0);
        expectIoctlError(await failure(control.resume({ name }, 0, 0)), 'EINVAL', 22, 'DM_DEV_SUSPEND', name);
        const info = await control.info({ name }, 0);
        expect(has(info.flags, 'DM_SUSPEND_FLAG')).toBe(true);
        expect(has(info.flags, 'DM_INACTIVE_PRESENT_FLAG')).toBe(false);
        const { targets } = await control.tableStatus({ name }, flag('DM_STATUS_TABLE_FLAG'));
        expect(targets.map((t) => t.length)).toEqual([8192]);
      });
    });

    describe('snapshots', () => {
      it('builds an origin and a persistent snapshot over a -real device', async () => {
        const disk = await env.makeBlockDevice(8 * MiB);
        const cowPath = await env.makeBlockDevice(4 * MiB);
        const cowNumber = await deviceNumber(cowPath);
        const cowSectors = await sizeInSectors(cowPath);
        const base = unique('snap');
        const real = await linearOver(`${base}-real`, disk);
        const realNumber = `${real.major}:${real.minor}`;

        await activate(`${base}-snap`, [{ start: 0, length: 16384, type: 'snapshot', params: `${realNumber} ${cowPath} P 32` }]);
        await activate(base, [{ start: 0, length: 16384, type: 'snapshot-origin', params: realNumber }]);

        const status = await control.tableStatus({ name: `${base}-snap` }, 0);
        expect(status.targets[0]!.params).toMatch(/^\d+\/\d+ \d+$/);
        expect(status.targets[0]!.params).toBe(`64/${cowSectors} 64`);
        const table = await control.tableStatus({ name: `${base}-snap` }, flag('DM_STATUS_TABLE_FLAG'));
        expect(table.targets).toEqual([{ start: 0, length: 16384, type: 'snapshot', params: `${realNumber} ${cowNumber} P 32` }]);
        const origin = await control.tableStatus({ name: base }, flag('DM_STATUS_TABLE_FLAG'));
        expect(origin.targets).toEqual([{ start: 0, length: 16384, type: 'snapshot-origin', params: realNumber }]);
        expect((await control.tableStatus({ name: base }, 0)).targets[0]!.params).toBe('');

        const { devices } = await control.deps({ name: `${base}-snap` }, 0);
        expect(devices.map(([major, minor]) => `${major}:${minor}`)).toEqual([cowNumber, realNumber]);

        expectIoctlError(await failure(control.remove({ name: `${base}-real` }, 0, 0)), 'EBUSY', 16, 'DM_DEV_REMOVE', `${base}-real`);
        expectIoctlError(await failure(control.message({ name: `${base}-snap` }, 0, 'hello')), 'EINVAL', 22, 'DM_TARGET_MSG', `${base}-snap`);
        expectIoctlError(await failure(control.message({ name: base }, 0, 'hello')), 'EINVAL', 22, 'DM_TARGET_MSG', base);
        expectIoctlError(await failure(control.message({ name: `${base}-snap` }, 16384, 'hello')), 'EINVAL', 22, 'DM_TARGET_MSG', `${base}-snap`);
      });

      it('reports a transient snapshot with no metadata', async () => {
        const disk = await env.makeBlockDevice(8 * MiB);
        const cowPath = await env.makeBlockDevice(4 * MiB);
        const base = unique('trans');
        const real = await linearOver(`${base}-real`, disk);
        const realNumber = `${real.major}:${real.minor}`;
        await activate(`${base}-snap`, [{ start: 0, length: 16384, type: 'snapshot', params: `${realNumber} ${cowPath} N 16` }]);
        expect((await control.tableStatus({ name: `${base}-snap` }, 0)).targets[0]!.params).toBe(`0/${await sizeInSectors(cowPath)} 0`);
        const table = await control.tableStatus({ name: `${base}-snap` }, flag('DM_STATUS_TABLE_FLAG'));
        expect(table.targets[0]!.params).toBe(`${realNumber} ${await deviceNumber(cowPath)} N 16`);
      });

      it('refuses bad snapshot tables (EINVAL) and a missing COW', async () => {
        const disk = await env.makeBlockDevice(8 * MiB);
        const cowPath = await env.makeBlockDevice(4 * MiB);
        const base = unique('badsnap');
        const real = await linearOver(`${base}-real`, disk);
        const realNumber = `${real.major}:${real.minor}`;
        const name = `${base}-snap`;
        await control.create(name, '', 0);
        const [, minor] = await control.version();
        const missingCode = env.missingTableDeviceCode ?? (minor <= 47 ? 'ENODEV' : 'ENOENT');
        const cases: [string, string][] = [
          [`${realNumber} ${cowPath} P 24`, 'EINVAL'],
          [`${realNumber} ${cowPath} X 32`, 'EINVAL'],
          [`${realNumber} ${cowPath} P`, 'EINVAL'],
          [`${realNumber} ${realNumber} P 32`, 'EINVAL'],
          [`${realNumber} ${cowPath} P 32 1 no_such_feature`, 'EINVAL'],
          [`${realNumber} /dev/dmsnap-no-such-cow P 32`, missingCode],
        ];
        for (const [params, code] of cases) {
          const error = await failure(control.load({ name }, [{ start: 0, length: 16384, type: 'snapshot', params }], 0));
          expect({ params, code: error.code }).toEqual({ params, code });
        }
      });

      it('refuses a second snapshot on a COW whose first is not active yet', async () => {
        const disk = await env.makeBlockDevice(8 * MiB);
        const cowPath = await env.makeBlockDevice(4 * MiB);
        const base = unique('pair');
        const real = await linearOver(`${base}-real`, disk);
        const params = `${real.major}:${real.minor} ${cowPath} P 32`;
        await control.create(`${base}-a`, '', 0);
        await control.create(`${base}-b`, '', 0);
        await control.load({ name: `${base}-a` }, [{ start: 0, length: 16384, type: 'snapshot', params }], 0);
        const error = await failure(control.load({ name: `${base}-b` }, [{ start: 0, length: 16384, type: 'snapshot', params }], 0));
        expectIoctlError(error, 'EINVAL', 22, 'DM_TABLE_LOAD', `${base}-b`);
      });
    });

    describe('DM_DEV_REMOVE of a device in use', () => {
      it('defers the removal until the last user goes', async () => {
        const disk = await env.makeBlockDevice(4 * MiB);
        const lower = unique('lower');
        const upper = unique('upper');
        const info = await linearOver(lower, disk);
        await activate(upper, [{ start: 0, length: 8192, type: 'linear', params: `${info.major}:${info.minor} 0` }]);

        expectIoctlError(await failure(control.remove({ name: lower }, 0, 0)), 'EBUSY', 16, 'DM_DEV_REMOVE', lower);
        const deferred = await control.remove({ name: lower }, flag('DM_DEFERRED_REMOVE'), 0);
        expect(has(deferred.flags, 'DM_DEFERRED_REMOVE')).toBe(true);
        expect(has(deferred.flags, 'DM_UEVENT_GENERATED_FLAG')).toBe(false);
        expect(has((await control.info({ name: lower }, 0)).flags, 'DM_DEFERRED_REMOVE')).toBe(true);
        expect((await control.listDevices()).some((entry) => entry.name === lower)).toBe(true);

        await removeSoon({ name: upper });
        expect(await gone(lower)).toBe(true);
      });

      it('keeps the device when the deferred removal is cancelled', async () => {
        const disk = await env.makeBlockDevice(4 * MiB);
        const lower = unique('lower');
        const upper = unique('upper');
        const info = await linearOver(lower, disk);
        await activate(upper, [{ start: 0, length: 8192, type: 'linear', params: `${info.major}:${info.minor} 0` }]);
        await control.remove({ name: lower }, flag('DM_DEFERRED_REMOVE'), 0);

        expect(await control.message({ name: lower }, 0, '@cancel_deferred_remove')).toBeNull();
        expect(has((await control.info({ name: lower }, 0)).flags, 'DM_DEFERRED_REMOVE')).toBe(false);
        await removeSoon({ name: upper });
        await sleep(200);
        expect((await control.info({ name: lower }, 0)).name).toBe(lower);
      });
    });

    describe('events', () => {
      it('wakes DM_DEV_WAIT when the event counter moves', async () => {
        const disk = await env.makeBlockDevice(4 * MiB);
        const name = unique('wait');
        const { major, minor } = await linearOver(name, disk);
        const now = await control.waitEvent({ name }, 7);
        expect(now.eventNr).toBe(0);
        // By number: the rename may reach the kernel before the wait does, and
        // then a wait by the old name would find no device. A wait that starts
        // after the rename returns at once, the counter already past 0.
        const waiting = control.waitEvent({ major, minor }, 0);
        await control.rename({ name }, unique('waited'), 0, 0);
        expect((await waiting).eventNr).toBe(1);
      });

      it('makes an armed control readable on the next event, until cancelled or closed', async () => {
        const name = unique('poll');
        await control.create(name, '', 0);
        const watcher = await env.binding().openControl(env.controlPath);
        try {
          await watcher.armPoll();
          const readable = watcher.pollReadable();
          const early = await Promise.race([readable, sleep(100).then(() => 'pending')]);
          expect(early).toBe('pending');
          await control.rename({ name }, unique('polled'), 0, 0);
          expect(await readable).toBe(true);
          // Still readable until armed again.
          expect(await watcher.pollReadable()).toBe(true);

          await watcher.armPoll();
          const cancelled = watcher.pollReadable();
          watcher.cancelPoll();
          expect(await cancelled).toBe(false);

          await watcher.armPoll();
          const closed = watcher.pollReadable();
          watcher.close();
          expect(await closed).toBe(false);
        } finally {
          watcher.close();
        }
      });
    });

    describe('udev cookies', () => {
      it('waits for the semaphore to reach zero, or times out', async () => {
        const binding = env.binding();
        const cookie = binding.udevCookieCreate();
        expect(cookie.base).toBeGreaterThanOrEqual(1);
        expect(cookie.base).toBeLessThanOrEqual(0xffff);
        expect(Number.isInteger(cookie.semid) && cookie.semid >= 0).toBe(true);
        binding.udevCookieAdd(cookie.semid, 1);
        expect(await binding.udevCookieWait(cookie.semid, 100)).toBe(false);

        const zero = binding.udevCookieCreate();
        expect(await binding.udevCookieWait(zero.semid, 1000)).toBe(true);

        const balanced = binding.udevCookieCreate();
        binding.udevCookieAdd(balanced.semid, 1);
        binding.udevCookieAdd(balanced.semid, -1);
        expect(await binding.udevCookieWait(balanced.semid, 1000)).toBe(true);

        const empty = binding.udevCookieCreate();
        try {
          let error: unknown;
          try {
            binding.udevCookieAdd(empty.semid, -1);
          } catch (e) {
            error = e;
          }
          expect(error).toBeInstanceOf(SyscallError);
          expect(error).toMatchObject({ code: 'EAGAIN', syscall: 'semop' });
        } finally {
          binding.udevCookieDestroy(empty.semid);
        }
      });
    });
  });
}
