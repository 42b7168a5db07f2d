/**
 * DeviceMapper.freeze and freezeGroup, the native freeze of one snapshot or a group (suspend
 * the origins, resume the snapshots, resume the origins in one call): written once, run against the fake binding
 * and against the real addon and kernel (VM).
 */
import { DeviceMapper, DmError, type NativeBinding } from '../../lib';
import { errorTarget } from '../../lib/targets/error';
import { zeroTarget } from '../../lib/targets/zero';
import { sectors } from '../../lib/units';

export interface FreezeEnvironment {
  binding(): NativeBinding;
  /** Options for DeviceMapper.open besides the binding (devDir, udev). */
  openOptions(): { devDir?: string; udev?: boolean | 'auto' };
}

export function freezeSuite(env: FreezeEnvironment): void {
  const prefix = `dmsnap-fz${process.pid}-`;
  let dm: DeviceMapper;
  let counter = 0;
  const fresh = (what: string) => `${prefix}${what}-${counter++}`;

  beforeEach(async () => {
    dm = await DeviceMapper.open({ binding: env.binding(), ...env.openOptions() });
  });

  afterEach(async () => {
    for (const device of (await dm.list()).filter((d) => d.name.startsWith(prefix))) {
      if ((await dm.info(device.name)).suspended) await dm.resume(device.name).catch(() => undefined);
      await dm.remove(device.name, { retry: false }).catch(() => undefined);
    }
    dm.close();
  });

  /** An "origin" with a live zero table and an error table waiting, and a "snapshot" with a table loaded. */
  async function pair() {
    const origin = fresh('o');
    const snap = fresh('s');
    await dm.create(origin, { table: [zeroTarget({ length: sectors(64) })] });
    await dm.load(origin, [errorTarget({ length: sectors(64) })]);
    await dm.create(snap);
    await dm.load(snap, [zeroTarget({ length: sectors(64) })]);
    return { origin, snap };
  }

  describe('freeze', () => {
    it('suspends the origin, resumes the snapshot, then the origin with its new table', async () => {
      const { origin, snap } = await pair();
      const batch = dm.udevBatch();
      const done = await dm.freeze(origin, snap, { batch, originTableLoaded: true });
      await batch.finish();
      expect(done.freezeMs).toBeGreaterThan(0);
      expect(done.memoryLock).toBe('locked');
      expect(done.origin).toMatchObject({ name: origin, suspended: false, liveTable: true, inactiveTable: false });
      expect(done.snapshot).toMatchObject({ name: snap, suspended: false, liveTable: true });
      expect(await dm.table(origin)).toEqual([{ start: 0, length: 64, type: 'error', params: '' }]);
      expect(await dm.table(snap)).toEqual([{ start: 0, length: 64, type: 'zero', params: '' }]);
      expect((await dm.info(origin)).suspended).toBe(false);
    });

    it('resumes the origin with its previous table when a step fails, and says which', async () => {
      const { origin } = await pair();
      const batch = dm.udevBatch();
      const missing = fresh('missing');
      const error = await dm.freeze(origin, missing, { batch, originTableLoaded: true }).catch((e: unknown) => e);
      await batch.finish();
      expect(error).toBeInstanceOf(DmError);
      expect(error).toMatchObject({
        code: 'ENXIO',
        ioctl: 'DM_DEV_SUSPEND',
        device: missing,
        freezeStep: 'resume-snapshot',
        recovery: { cleared: true, resumed: true },
      });
      expect(await dm.info(origin)).toMatchObject({ suspended: false, inactiveTable: false });
      expect(await dm.table(origin)).toEqual([{ start: 0, length: 64, type: 'zero', params: '' }]);
    });

    it('fails at the suspend without touching the snapshot', async () => {
      const { snap } = await pair();
      const batch = dm.udevBatch();
      const missing = fresh('missing');
      const error = await dm.freeze(missing, snap, { batch }).catch((e: unknown) => e);
      await batch.finish();
      expect(error).toMatchObject({ code: 'ENXIO', device: missing, freezeStep: 'suspend-origin' });
      expect((error as { recovery?: unknown }).recovery).toBeUndefined();
      expect(await dm.info(snap)).toMatchObject({ liveTable: false, inactiveTable: true });
    });

    it('fails right after a step when a test seam asks, and recovers the same way', async () => {
      for (const step of ['suspend-origin', 'resume-snapshot'] as const) {
        const { origin, snap } = await pair();
        const batch = dm.udevBatch();
        const error = await dm.freeze(origin, snap, { batch, originTableLoaded: true, seam: { step, action: 'fail' } }).catch((e: unknown) => e);
        await batch.finish();
        expect(error).toMatchObject({ message: `test seam: failing after step "${step}"`, freezeStep: step, recovery: { cleared: true, resumed: true } });
        expect(await dm.info(origin)).toMatchObject({ suspended: false, inactiveTable: false });
        expect(await dm.table(origin)).toEqual([{ start: 0, length: 64, type: 'zero', params: '' }]);
        expect((await dm.info(snap)).liveTable).toBe(step === 'resume-snapshot');
      }
    });
  });

  describe('freezeGroup', () => {
    const zero = [{ start: 0, length: 64, type: 'zero', params: '' }];
    const error = [{ start: 0, length: 64, type: 'error', params: '' }];

    it('suspends every origin, resumes every snapshot, then every origin with its new table', async () => {
      const members = [await pair(), await pair(), await pair()];
      const batch = dm.udevBatch();
      const done = await dm.freezeGroup(members.map(({ origin, snap }) => ({ origin, snapshot: snap, originTableLoaded: true })), { batch });
      await batch.finish();
      expect(done.freezeMs).toBeGreaterThan(0);
      expect(done.members.map((m) => [m.origin.name, m.snapshot.name])).toEqual(members.map(({ origin, snap }) => [origin, snap]));
      for (const { origin, snap } of members) {
        expect(await dm.info(origin)).toMatchObject({ suspended: false, inactiveTable: false });
        expect(await dm.table(origin)).toEqual(error);
        expect(await dm.info(snap)).toMatchObject({ suspended: false, liveTable: true });
      }
    });

    it('on a failure at any member, resumes every origin suspended with its previous table', async () => {
      // A member whose snapshot is missing fails its resume; one whose origin is missing fails its suspend.
      for (const [broken, step] of [[0, 'resume-snapshot'], [2, 'resume-snapshot'], [1, 'suspend-origin'], [2, 'suspend-origin']] as const) {
        const members = [await pair(), await pair(), await pair()];
        const group = members.map(({ origin, snap }) => ({ origin, snapshot: snap, originTableLoaded: true }));
        const missing = fresh('missing');
        group[broken] = step === 'suspend-origin' ? { ...group[broken], origin: missing } : { ...group[broken], snapshot: missing };
        const batch = dm.udevBatch();
        const failed = await dm.freezeGroup(group, { batch }).catch((e: unknown) => e);
        await batch.finish();
        expect(failed).toMatchObject({ code: 'ENXIO', device: missing, freezeStep: step, freezeMember: broken });
        const facts = (failed as { freezeMembers: { swapped: boolean; recovery?: unknown }[] }).freezeMembers;
        for (const [i, { origin }] of members.entries()) {
          expect(await dm.info(origin)).toMatchObject({ suspended: false });
          if (step === 'suspend-origin' && i === broken) continue;
          // The others were suspended (a group's origins are suspended at once): recovered.
          expect(facts[i]).toEqual({ swapped: false, recovery: { cleared: true, resumed: true } });
          expect(await dm.info(origin)).toMatchObject({ inactiveTable: false });
          expect(await dm.table(origin)).toEqual(zero);
        }
      }
    });

    it('fails right after a step of any member when a test seam asks, and recovers every origin', async () => {
      for (const step of ['suspend-origin', 'resume-snapshot'] as const) {
        for (const member of [0, 1]) {
          const members = [await pair(), await pair()];
          const batch = dm.udevBatch();
          const group = members.map(({ origin, snap }) => ({ origin, snapshot: snap, originTableLoaded: true }));
          const failed = await dm.freezeGroup(group, { batch, seam: { step, member, action: 'fail' } }).catch((e: unknown) => e);
          await batch.finish();
          expect(failed).toMatchObject({ message: `test seam: failing after step "${step}" of member ${member}`, freezeStep: step, freezeMember: member });
          for (const [i, { origin, snap }] of members.entries()) {
            // Every origin was suspended (at once) before any seam acts.
            expect(await dm.info(origin)).toMatchObject({ suspended: false, inactiveTable: false });
            expect(await dm.table(origin)).toEqual(zero);
            expect((await dm.info(snap)).liveTable).toBe(step === 'resume-snapshot' && i <= member);
          }
        }
      }
    });

    it('takes 1 to 16 members', async () => {
      const batch = dm.udevBatch();
      await expect(dm.freezeGroup([], { batch })).rejects.toThrow(/1 to 16 origins; got 0/);
      await batch.finish();
    });
  });
}
