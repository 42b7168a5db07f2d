/**
 * The snapshot lifecycle, written once and run against the fake binding (unit) and the
 * real kernel (VM): prepare, snapshot, status, watch, drop, release, and the
 * transaction guarantees.
 */
import { invariantsSuite } from './invariants.suite';
import { reattachSuite } from './reattach.suite';
import { groupSuite } from './group.suite';
import { DeviceMapper, DmsnapError, InvalidArgumentError, listOrigins, openOrigin, prepare, probeSignatures, recover, withSnapshot, type Origin, type Step } from '../../lib';
import type { NativeBinding } from '../../lib/native';
import { removeTestDevices } from './cleanup';
import { System } from '../../lib/system/system';
import { LABEL_AREA_BYTES, readLabel } from '../../lib/targets/cow-label';

/** A second path to a block device, that can be pointed at another one. */
export interface DeviceAlias {
  path: string;
  /** Points the path at another device, at once (a rename over it, as an attacker would). */
  repoint(target: string): void;
}

export interface LifecycleEnvironment {
  /** A client for the environment's kernel (fake or real), its binding wrapped by `wrap` if given. */
  openClient(wrap?: (binding: NativeBinding) => NativeBinding): Promise<DeviceMapper>;
  /** A path naming `target` (a symlink on the real system), in a directory of the test's. */
  makeAlias(target: string): Promise<DeviceAlias>;
  /** A block device of the given size that reads as zeros; cleaned up by the environment. */
  makeBlockDevice(sizeBytes: number): Promise<string>;
  /** Writes `bytes` of new data through the origin device, starting at `offsetBytes`. */
  writeThrough(devicePath: string, bytes: number, offsetBytes?: number): Promise<void>;
  /** Puts an ext4 filesystem signature on the device. */
  formatExt4(path: string): Promise<void>;
  /** Mounts the ext4 on the device read-write, writes a file and unmounts it (a boot without dmsnap). */
  writeFilesystem(path: string): Promise<void>;
  lockDir: string;
  /** How many dmsnap-guardian processes this process has started and not yet collected. */
  runningGuardians(): number;
}

const MiB = 1024 * 1024;

export function lifecycleSuite(env: LifecycleEnvironment): void {
  const prefix = `dmsnap-l${process.pid}-`;
  let dm: DeviceMapper;
  let counter = 0;
  const freshName = () => `${prefix}${counter++}`;
  const options = () => ({ dm, lockDir: env.lockDir, lockTimeoutMs: 5000 });

  /** The device-mapper state: names, tables and suspended flags. */
  async function state(): Promise<string[]> {
    const lines: string[] = [];
    for (const device of await dm.list()) {
      if (!device.name.startsWith(prefix)) continue;
      const info = await dm.info(device.name);
      const table = (await dm.table(device.name)).map((l) => `${l.start} ${l.length} ${l.type} ${l.params}`).join('|');
      lines.push(`${device.name} ${info.suspended ? 'suspended' : 'live'} ${info.uuid} ${table}`);
    }
    return lines;
  }

  async function cleanup(): Promise<void> {
    await removeTestDevices({
      list: async () => (await dm.list()).map((d) => d.name).filter((name) => name.startsWith(prefix)),
      settle: async (name) => {
        if ((await dm.info(name)).suspended) await dm.resume(name);
      },
      remove: async (name) => void (await dm.remove(name, { retry: false })),
      // Snapshots first, then wrappers, then -real devices.
      rank: (name) => (name.endsWith('-real') ? 2 : /-snap|-s\d/.test(name) ? 0 : 1),
    }, 4);
  }

  async function prepared(sizeBytes = 16 * MiB): Promise<Origin> {
    const device = await env.makeBlockDevice(sizeBytes);
    return prepare(device, { ...options(), name: freshName() });
  }

  beforeEach(async () => {
    dm = await env.openClient();
  });

  afterEach(async () => {
    await cleanup();
    dm.close();
  });

  describe('prepare and release', () => {
    it('wraps a device in NAME and NAME-real with the same linear table, tagged as dmsnap devices', async () => {
      const device = await env.makeBlockDevice(8 * MiB);
      const name = freshName();
      const origin = await prepare(device, { ...options(), name });
      expect(origin.name).toBe(name);
      expect(origin.devicePath).toBe(dm.devicePath(name));
      expect(origin.sizeBytes).toBe(8 * MiB);
      const wrapper = await dm.info(name);
      const real = await dm.info(`${name}-real`);
      expect(wrapper.uuid).toBe(`DMSNAP-${origin.originId}-origin`);
      expect(real.uuid).toBe(`DMSNAP-${origin.originId}-real`);
      const table = await dm.table(name);
      expect(table).toEqual(await dm.table(`${name}-real`));
      expect(table).toEqual([{ start: 0, length: 16384, type: 'linear', params: `${origin.backing.major}:${origin.backing.minor} 0` }]);
    });

    it('is idempotent for the same device and refuses the name for another', async () => {
      const device = await env.makeBlockDevice(4 * MiB);
      const other = await env.makeBlockDevice(4 * MiB);
      const name = freshName();
      const first = await prepare(device, { ...options(), name });
      const again = await prepare(device, { ...options(), name });
      expect(again.originId).toBe(first.originId);
      const before = await state();
      await expect(prepare(other, { ...options(), name })).rejects.toMatchObject({ code: 'EEXIST', message: expect.stringMatching(/already wraps/) });
      expect(await state()).toEqual(before);
    });

    it('refuses a name used by a device dmsnap did not create', async () => {
      const device = await env.makeBlockDevice(4 * MiB);
      const name = freshName();
      await dm.create(name, { table: '0 8 zero' });
      const before = await state();
      await expect(prepare(device, { ...options(), name })).rejects.toMatchObject({ code: 'EEXIST', message: expect.stringMatching(/did not create/) });
      expect(await state()).toEqual(before);
    });

    it('releases an origin without snapshots', async () => {
      const origin = await prepared();
      await origin.release();
      expect(await dm.find(origin.name)).toBeUndefined();
      expect(await dm.find(origin.realName)).toBeUndefined();
    });

    it('is found again from the kernel alone', async () => {
      const origin = await prepared();
      const snap = await origin.snapshot({ cow: await env.makeBlockDevice(4 * MiB) });
      const fresh = await env.openClient();
      try {
        const found = await openOrigin(origin.name, { dm: fresh, lockDir: env.lockDir });
        expect(found.originId).toBe(origin.originId);
        expect(found.backing).toMatchObject({ major: origin.backing.major, minor: origin.backing.minor });
        expect((await found.snapshots()).map((s) => s.name)).toEqual([snap.name]);
        const all = (await listOrigins({ dm: fresh })).filter((o) => o.name.startsWith(prefix));
        expect(all.map((o) => o.name)).toEqual([origin.name]);
      } finally {
        fresh.close();
      }
      await expect(openOrigin(`${prefix}none`, options())).rejects.toMatchObject({ code: 'ENXIO' });
    });
  });

  describe('snapshot and drop', () => {
    it('takes a snapshot: snapshot-origin on the wrapper, snapshot over NAME-real, and reports usage', async () => {
      const origin = await prepared();
      const linearTable = await dm.table(origin.name);
      const cow = await env.makeBlockDevice(4 * MiB);
      const snap = await origin.snapshot({ cow });
      expect(snap.name).toBe(`${origin.name}-snap`);
      expect(snap.freezeMs).toBeGreaterThanOrEqual(0);
      const real = await dm.info(origin.realName);
      const cowNumber = await dm.nativeBinding.statBlockDevice(cow);
      expect(await dm.table(origin.name)).toEqual([{ start: 0, length: 32768, type: 'snapshot-origin', params: `${real.major}:${real.minor}` }]);
      // The kernel gets the COW past dmsnap's label (64 KiB): through NAME-SNAP-cow.
      const mapping = await dm.info(`${snap.name}-cow`);
      expect(mapping.uuid).toBe(`DMSNAP-${origin.originId}-cow-${snap.info.snapId}`);
      expect(await dm.table(mapping.name)).toEqual([{ start: 0, length: 8192 - 128, type: 'linear', params: `${cowNumber.major}:${cowNumber.minor} 128` }]);
      expect(await dm.table(snap.name)).toEqual([
        { start: 0, length: 32768, type: 'snapshot', params: `${real.major}:${real.minor} ${mapping.major}:${mapping.minor} P 32` },
      ]);
      expect(snap.info.cowDevice).toMatchObject({ major: cowNumber.major, minor: cowNumber.minor });
      expect((await dm.info(origin.name)).suspended).toBe(false);
      const status = await snap.status();
      expect(status).toMatchObject({ name: snap.name, device: dm.devicePath(snap.name), state: 'active', totalSectors: 8192 - 128 });
      expect(status.metadataSectors).toBeGreaterThan(0);

      await env.writeThrough(origin.devicePath, 1 * MiB);
      const after = await snap.status();
      expect(after.allocatedSectors!).toBeGreaterThanOrEqual(status.allocatedSectors! + 2048);
      expect(after.usedPercent).toBeCloseTo((after.allocatedSectors! / (8192 - 128)) * 100, 6);
      const originStatus = await origin.status();
      expect(originStatus.snapshots).toHaveLength(1);
      expect(originStatus.snapshots[0]).toMatchObject({ name: snap.name, state: 'active', chunkSectors: 32, persistent: true });

      await snap.drop();
      expect(await dm.find(snap.name)).toBeUndefined();
      expect(await dm.table(origin.name)).toEqual(linearTable);
      expect((await dm.info(origin.name)).suspended).toBe(false);
    });

    it("writes dmsnap's label on a persistent COW before the snapshot exists, and clears it with the drop", async () => {
      const origin = await prepared();
      const cow = await env.makeBlockDevice(4 * MiB);
      const labelOf = async () => {
        const device = await System.of(dm).openBlockDevice(cow, { exclusive: false, writable: false });
        try {
          return readLabel(await device.read(0, LABEL_AREA_BYTES, { direct: true }))?.label;
        } finally {
          device.close();
        }
      };
      const seen: (string | undefined)[] = [];
      const snap = await origin.snapshot({
        cow,
        chunkSectors: 16,
        onStep: async (step) => {
          if (step === 'write-label' || step === 'create-cow-device') seen.push((await labelOf())?.state);
        },
      });
      expect(seen).toEqual(['active', 'active']);
      expect(await labelOf()).toMatchObject({
        seq: 0,
        dataOffsetSectors: 128,
        origin: { id: origin.originId, name: origin.name, sizeSectors: origin.sizeSectors },
        snapshot: { id: snap.info.snapId, name: snap.name, chunkSectors: 16, trackingSince: null },
        state: 'active',
      });
      await snap.drop();
      expect(await labelOf()).toBeUndefined();
      expect(await dm.find(`${snap.name}-cow`)).toBeUndefined();
      // A transient snapshot has neither label nor mapping: it cannot outlive the kernel.
      const transient = await origin.snapshot({ cow, persistent: false });
      expect(await labelOf()).toBeUndefined();
      expect(await dm.find(`${transient.name}-cow`)).toBeUndefined();
      const [line] = await dm.table(transient.name);
      const cowNumber = await dm.nativeBinding.statBlockDevice(cow);
      expect(line!.params.split(' ')[1]).toBe(`${cowNumber.major}:${cowNumber.minor}`);
      await transient.drop();
    });

    it('holds no guardian process once snapshot and drop have returned', async () => {
      const origin = await prepared();
      const cow = await env.makeBlockDevice(4 * MiB);
      const before = env.runningGuardians();
      const snap = await origin.snapshot({ cow });
      expect(env.runningGuardians()).toBe(before);
      await snap.drop();
      expect(env.runningGuardians()).toBe(before);
      await expect(origin.snapshot({ cow: origin.devicePath })).rejects.toBeInstanceOf(DmsnapError);
      expect(env.runningGuardians()).toBe(before);
    });

    it('fails before it changes anything when the guardian cannot start', async () => {
      const origin = await prepared();
      const cow = await env.makeBlockDevice(4 * MiB);
      const before = await state();
      const saved = process.env.DMSNAP_GUARDIAN;
      process.env.DMSNAP_GUARDIAN = '/nonexistent/dmsnap-guardian';
      try {
        await expect(origin.snapshot({ cow })).rejects.toMatchObject({ code: 'ERR_DMSNAP_GUARDIAN', message: expect.stringMatching(/npm rebuild dmsnap/) });
      } finally {
        if (saved === undefined) delete process.env.DMSNAP_GUARDIAN;
        else process.env.DMSNAP_GUARDIAN = saved;
      }
      expect(await state()).toEqual(before);
      expect(env.runningGuardians()).toBe(0);
      await (await origin.snapshot({ cow })).drop();
    });

    it('takes transient snapshots with other chunk sizes', async () => {
      const origin = await prepared();
      const snap = await origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB), persistent: false, chunkSectors: 16, name: `${origin.name}-t` });
      expect((await dm.table(snap.name))[0].params).toMatch(/ N 16$/);
      expect(snap.info).toMatchObject({ persistent: false, chunkSectors: 16 });
      expect((await snap.status()).metadataSectors).toBe(0);
      await snap.drop();
    });

    it('keeps several snapshots of one origin, dropped in either order', async () => {
      for (const order of [[0, 1], [1, 0]]) {
        const origin = await prepared();
        const linearTable = await dm.table(origin.name);
        const snaps = [
          await origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB), name: `${origin.name}-s1` }),
          await origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB), name: `${origin.name}-s2` }),
        ];
        expect((await origin.snapshots()).map((s) => s.name)).toEqual([`${origin.name}-s1`, `${origin.name}-s2`]);
        await snaps[order[0]].drop();
        expect((await dm.table(origin.name))[0].type).toBe('snapshot-origin');
        expect((await snaps[order[1]].status()).state).toBe('active');
        await snaps[order[1]].drop();
        expect(await dm.table(origin.name)).toEqual(linearTable);
        expect(await origin.snapshots()).toEqual([]);
      }
    });

    it('drops on scope exit and after withSnapshot, even when it throws', async () => {
      const origin = await prepared();
      const cow = await env.makeBlockDevice(2 * MiB);
      {
        await using snap = await origin.snapshot({ cow });
        expect(await dm.find(snap.name)).toBeDefined();
      }
      expect(await origin.snapshots()).toEqual([]);
      await expect(
        withSnapshot(origin, { cow }, async (snap) => {
          expect((await snap.status()).state).toBe('active');
          throw new Error('backup failed');
        }),
      ).rejects.toThrow('backup failed');
      expect(await origin.snapshots()).toEqual([]);
      expect((await dm.table(origin.name))[0].type).toBe('linear');
    });

    it('refuses to release while snapshots exist', async () => {
      const origin = await prepared();
      await origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB) });
      await expect(origin.release()).rejects.toMatchObject({ code: 'ERR_DMSNAP_HAS_SNAPSHOTS' });
      expect(await dm.find(origin.name)).toBeDefined();
    });

    it('reports a full COW as invalid, keeps the origin working, and still drops', async () => {
      const origin = await prepared(16 * MiB);
      const snap = await origin.snapshot({ cow: await env.makeBlockDevice(1 * MiB), chunkSectors: 8 });
      const controller = new AbortController();
      const updates = snap.watch({ intervalMs: 60_000, signal: controller.signal });
      expect((await updates.next()).value).toMatchObject({ state: 'active' });
      await env.writeThrough(origin.devicePath, 4 * MiB);
      // The watch wakes on the kernel's event, long before its 60 s interval.
      const started = Date.now();
      let last = (await updates.next()).value;
      while (last && last.state === 'active') last = (await updates.next()).value;
      expect(last).toMatchObject({ state: 'invalid' });
      expect(Date.now() - started).toBeLessThan(30_000);
      controller.abort();
      expect((await updates.next()).done).toBe(true);
      expect(await snap.status()).toMatchObject({ state: 'invalid', usedPercent: null });
      await env.writeThrough(origin.devicePath, 1 * MiB, 8 * MiB);
      await snap.drop();
      expect((await dm.table(origin.name))[0].type).toBe('linear');
      // The same COW serves the next snapshot: its header is zeroed again.
      const next = await origin.snapshot({ cow: snap.info.cowDevice.path!, chunkSectors: 8 });
      expect((await next.status()).state).toBe('active');
      await next.drop();
    });

    it('calls onUsage when usage passes a threshold', async () => {
      const origin = await prepared(16 * MiB);
      const snap = await origin.snapshot({ cow: await env.makeBlockDevice(4 * MiB) });
      const reached = new Promise<number | null>((resolve) => snap.onUsage(25, (r) => resolve(r.usedPercent), { intervalMs: 50 }));
      await env.writeThrough(origin.devicePath, 2 * MiB);
      expect(await reached).toBeGreaterThanOrEqual(25);
      await snap.drop();
    });
  });

  describe('bad input changes nothing', () => {
    it.each([
      ['a chunk size that is not a power of two', { chunkSectors: 24 }, InvalidArgumentError, /power of two/],
      ['a chunk size below 8 sectors', { chunkSectors: 4 }, InvalidArgumentError, /power of two from 8/],
      ['a snapshot name with a slash', { name: 'a/b' }, InvalidArgumentError, /without '\/'/],
    ])('refuses %s', async (_what, extra, kind, message) => {
      const origin = await prepared();
      const cow = await env.makeBlockDevice(2 * MiB);
      const before = await state();
      const error = await origin.snapshot({ cow, ...extra }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(kind);
      expect((error as Error).message).toMatch(message);
      expect(await state()).toEqual(before);
    });

    it('refuses the origin itself, its backing device or a missing path as the COW', async () => {
      const origin = await prepared();
      const before = await state();
      for (const cow of [origin.devicePath, origin.backing.path!, dm.devicePath(origin.realName)]) {
        const error = await origin.snapshot({ cow }).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(DmsnapError);
        expect(['ERR_DMSNAP_COW_IN_ORIGIN', 'EBUSY']).toContain((error as DmsnapError).code);
      }
      await expect(origin.snapshot({ cow: '/dev/dmsnap-no-such-cow' })).rejects.toMatchObject({ code: 'ENOENT' });
      expect(await state()).toEqual(before);
    });

    it('refuses a COW that holds a filesystem unless forced', async () => {
      const origin = await prepared();
      const cow = await env.makeBlockDevice(4 * MiB);
      await env.formatExt4(cow);
      const before = await state();
      const error = await origin.snapshot({ cow }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'ERR_DMSNAP_COW_HAS_DATA' });
      expect((error as Error).message).toMatch(new RegExp(`${cow} holds an ext4 filesystem.*forceWipe`));
      expect(await state()).toEqual(before);
      const snap = await origin.snapshot({ cow, forceWipe: true });
      expect((await snap.status()).state).toBe('active');
      await snap.drop();
      // Its own header now: reusing the COW needs no force.
      await (await origin.snapshot({ cow })).drop();
    });

    it('checks and zeroes one COW device, even if its path is swapped after the first look', async () => {
      const origin = await prepared();
      const blank = await env.makeBlockDevice(4 * MiB);
      const precious = await env.makeBlockDevice(4 * MiB);
      await env.formatExt4(precious);
      const alias = await env.makeAlias(blank);
      // A hostile path: the moment any call that names it returns, it names the device with data.
      const swapping = await env.openClient((binding) => swapAfterFirstUse(binding, alias, precious));
      try {
        const hostile = await openOrigin(origin.name, { dm: swapping, lockDir: env.lockDir });
        const snap = await hostile.snapshot({ cow: alias.path }).catch((e: unknown) => e);
        // Either refused, or a snapshot on the device that was checked; never the other one zeroed.
        expect(await probeSignatures(precious, { binding: dm.nativeBinding })).toEqual([expect.objectContaining({ type: 'ext4' })]);
        if (!(snap instanceof Error)) {
          const blankDev = await dm.nativeBinding.statBlockDevice(blank);
          const [line] = await dm.table((snap as { name: string }).name);
          expect(line!.type).toBe('snapshot');
          // The snapshot's COW mapping maps the device that was checked.
          expect((snap as { info: { cowDevice: { major: number; minor: number } } }).info.cowDevice).toMatchObject(blankDev);
          const [mapped] = await dm.table(`${(snap as { name: string }).name}-cow`);
          expect(mapped!.params).toBe(`${blankDev.major}:${blankDev.minor} 128`);
        }
      } finally {
        swapping.close();
      }
    });

    it('refuses a COW too small for header and metadata', async () => {
      const origin = await prepared();
      const before = await state();
      const cow = await env.makeBlockDevice(64 * 1024);
      await expect(origin.snapshot({ cow, chunkSectors: 64 })).rejects.toMatchObject({ code: 'ERR_DMSNAP_COW_TOO_SMALL' });
      expect(await state()).toEqual(before);
    });

    it('refuses a duplicate snapshot name', async () => {
      const origin = await prepared();
      await origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB) });
      const before = await state();
      await expect(origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB) })).rejects.toMatchObject({ code: 'EEXIST' });
      expect(await state()).toEqual(before);
    });
  });

  describe('transaction', () => {
    const steps: Step[] = ['validate', 'zero-cow', 'write-label', 'create-cow-device', 'create-snapshot-device', 'load-snapshot-table', 'load-origin-table', 'suspend-origin', 'resume-snapshot'];
    it.each(steps)('rolls back a failure right after step "%s"', async (failAfter) => {
      const origin = await prepared();
      const before = await state();
      const cow = await env.makeBlockDevice(2 * MiB);
      const error = await origin
        .snapshot({
          cow,
          onStep: (step) => {
            if (step === failAfter) throw new Error(`injected after ${step}`);
          },
        })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(Error);
      expect((error as Error).message).toContain(`injected after ${failAfter}`);
      if (failAfter !== 'validate') expect((error as Error).message).toMatch(/failed at step/);
      expect(await state()).toEqual(before);
      expect((await dm.info(origin.name)).suspended).toBe(false);
      // The origin takes writes and the next snapshot works.
      await env.writeThrough(origin.devicePath, 64 * 1024);
      const snap = await origin.snapshot({ cow });
      await snap.drop();
    });

    // Inside the freeze no JavaScript runs: the environment seam makes the native freeze
    // itself fail right after the step, and it resumes the origin with its previous table.
    it.each([
      ['suspend-origin', 1],
      ['resume-snapshot', 1],
      ['suspend-origin', 2],
      ['resume-snapshot', 2],
    ] as const)('rolls back a failure inside the freeze right after "%s" (snapshot %d)', async (failAfter, nth) => {
      const origin = await prepared();
      if (nth === 2) await origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB), name: `${origin.name}-s1` });
      const before = await state();
      const cow = await env.makeBlockDevice(2 * MiB);
      Object.assign(process.env, { DMSNAP_TEST_SEAMS: '1', DMSNAP_TEST_FAIL_AFTER: failAfter });
      const error = await origin
        .snapshot({ cow, name: `${origin.name}-s2` })
        .catch((e: unknown) => e)
        .finally(() => {
          delete process.env.DMSNAP_TEST_SEAMS;
          delete process.env.DMSNAP_TEST_FAIL_AFTER;
        });
      expect((error as Error).message).toContain(`failed at step "${failAfter}": test seam: failing after step "${failAfter}"`);
      expect(await state()).toEqual(before);
      expect((await dm.info(origin.name)).inactiveTable).toBe(false);
      await env.writeThrough(origin.devicePath, 64 * 1024);
      await (await origin.snapshot({ cow, name: `${origin.name}-s2` })).drop();
    });

    it('rolls back the second snapshot of an origin without touching the first', async () => {
      const origin = await prepared();
      const first = await origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB), name: `${origin.name}-s1` });
      const before = await state();
      const error = await origin
        .snapshot({
          cow: await env.makeBlockDevice(2 * MiB),
          name: `${origin.name}-s2`,
          onStep: (step) => {
            if (step === 'resume-snapshot') throw new Error('injected');
          },
        })
        .catch((e: unknown) => e);
      expect((error as Error).message).toMatch(/failed at step "resume-snapshot"/);
      expect(await state()).toEqual(before);
      expect((await first.status()).state).toBe('active');
    });

    it('serialises two snapshots of one origin and times out on a held lock', async () => {
      const origin = await prepared();
      const cows = [await env.makeBlockDevice(2 * MiB), await env.makeBlockDevice(2 * MiB)];
      const [a, b] = await Promise.all([
        origin.snapshot({ cow: cows[0], name: `${origin.name}-a` }),
        origin.snapshot({ cow: cows[1], name: `${origin.name}-b` }),
      ]);
      expect([a.name, b.name].sort()).toEqual([`${origin.name}-a`, `${origin.name}-b`]);
      await a.drop();
      await b.drop();

      const { lockOrigin } = await import('../../lib/system/lock');
      const unlock = await lockOrigin(dm.nativeBinding, origin.name, { lockDir: env.lockDir });
      try {
        const impatient = await openOrigin(origin.name, { dm, lockDir: env.lockDir, lockTimeoutMs: 200 });
        const error = await impatient.snapshot({ cow: cows[0] }).catch((e: unknown) => e);
        expect(error).toMatchObject({ code: 'ERR_DMSNAP_LOCKED' });
      } finally {
        unlock();
      }
    });
  });

  describe('recover', () => {
    /** Builds the devices of a snapshot interrupted at a given point, as a crash leaves them. */
    async function interrupted(stage: 'loaded' | 'suspended' | 'snapshot-resumed' | 'complete') {
      const origin = await prepared();
      const cow = await env.makeBlockDevice(2 * MiB);
      const real = await dm.info(origin.realName);
      const snapName = `${origin.name}-snap`;
      const size = origin.sizeSectors;
      await dm.create(snapName, { uuid: `DMSNAP-${origin.originId}-snap-0badc0de` });
      await dm.load(snapName, `0 ${size} snapshot ${real.major}:${real.minor} ${cow} P 32`);
      await dm.load(origin.name, `0 ${size} snapshot-origin ${real.major}:${real.minor}`);
      if (stage !== 'loaded') await dm.suspend(origin.name);
      if (stage === 'snapshot-resumed' || stage === 'complete') await dm.resume(snapName);
      if (stage === 'complete') await dm.resume(origin.name);
      return { origin, snapName };
    }

    it.each(['loaded', 'suspended', 'snapshot-resumed'] as const)('undoes a snapshot interrupted when %s', async (stage) => {
      const { origin, snapName } = await interrupted(stage);
      const linear = await dm.table(origin.realName);
      const actions = await recover({ dm, lockDir: env.lockDir });
      const mine = actions.filter((a) => a.device.startsWith(origin.name));
      expect(mine.map((a) => `${a.action} ${a.device}`)).toEqual(
        [
          `cleared-inactive-table ${origin.name}`,
          ...(stage === 'loaded' ? [] : [`resumed ${origin.name}`]),
          `removed ${snapName}`,
        ],
      );
      expect(await dm.table(origin.name)).toEqual(linear);
      expect((await dm.info(origin.name)).suspended).toBe(false);
      expect(await dm.find(snapName)).toBeUndefined();
      // Idempotent: nothing more to do.
      expect((await recover({ dm, lockDir: env.lockDir })).filter((a) => a.device.startsWith(origin.name))).toEqual([]);
      // And the next snapshot works.
      await (await origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB) })).drop();
    });

    it('keeps a snapshot that completed, and restores linear when only snapshot-origin is left', async () => {
      const { origin, snapName } = await interrupted('complete');
      const actions = (await recover({ dm, lockDir: env.lockDir })).filter((a) => a.device.startsWith(origin.name));
      expect(actions).toEqual([{ origin: origin.name, device: snapName, action: 'kept', reason: expect.any(String) }]);
      expect((await dm.info(snapName)).liveTable).toBe(true);
      await dm.remove(snapName);
      const after = (await recover({ dm, lockDir: env.lockDir })).filter((a) => a.device.startsWith(origin.name));
      expect(after.map((a) => a.action)).toEqual(['restored-linear-table']);
      expect(await dm.table(origin.name)).toEqual(await dm.table(origin.realName));
    });

    it('removes NAME-real left by an interrupted prepare, and never touches other devices', async () => {
      const origin = await prepared();
      await dm.remove(origin.name);
      const foreign = `${prefix}foreign`;
      await dm.create(foreign, { table: '0 8 zero' });
      await dm.suspend(foreign);
      const actions = (await recover({ dm, lockDir: env.lockDir })).filter((a) => a.device.startsWith(prefix));
      expect(actions.map((a) => `${a.action} ${a.device}`)).toEqual([`removed ${origin.realName}`]);
      expect((await dm.info(foreign)).suspended).toBe(true);
    });
  });

  invariantsSuite({ env, dm: () => dm, prepared: () => prepared(), state });
  reattachSuite({ env, dm: () => dm, freshName, state });
  groupSuite({ env, dm: () => dm, prepared: () => prepared(), state });
}

/**
 * The binding, but the alias is repointed at `target` as soon as the first call naming it
 * settles, and every later call naming it waits for that: as if an attacker swapped the
 * path right after dmsnap's first look at it.
 */
function swapAfterFirstUse(binding: NativeBinding, alias: DeviceAlias, target: string): NativeBinding {
  let first: Promise<void> | undefined;
  return new Proxy(binding, {
    get(object, key, receiver) {
      const value = Reflect.get(object, key, receiver) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        const call = () => (value as (...a: unknown[]) => unknown).apply(object, args);
        if (!args.includes(alias.path)) return call();
        if (first) return first.then(call);
        const result = Promise.resolve(call());
        first = result.then(
          () => alias.repoint(target),
          () => alias.repoint(target),
        );
        return result;
      };
    },
  });
}
