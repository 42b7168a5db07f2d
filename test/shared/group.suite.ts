/**
 * Group snapshots (one freeze for several origins) and the hooks around the freeze: part
 * of the shared lifecycle suite (fake binding and real kernel). The consistency of the
 * data across the group, under a writer, is proven in test/vm/group.test.ts.
 */
import { snapshotGroup, type DeviceMapper, type GroupMember, type Origin, type Step } from '../../lib';
import type { LifecycleEnvironment } from './lifecycle.suite';
import { takeTracking } from '../../lib/snapshot/incremental';

const MiB = 1024 * 1024;

export interface GroupContext {
  env: LifecycleEnvironment;
  dm(): DeviceMapper;
  prepared(): Promise<Origin>;
  state(): Promise<string[]>;
}

export function groupSuite(ctx: GroupContext): void {
  const { env } = ctx;
  // Each step fails on either origin on the fake kernel; on a real one (the VM suite, where
  // every group costs seconds) on the second, which the first has gone through already.
  const failing = process.env.DMSNAP_VM_KERNEL === undefined ? [0, 1] : [1];

  /** Two or three prepared origins, each with a COW device of its own. */
  async function group(count = 2): Promise<GroupMember[]> {
    const members: GroupMember[] = [];
    for (let i = 0; i < count; i++) members.push({ origin: await ctx.prepared(), cow: await env.makeBlockDevice(2 * MiB) });
    return members;
  }

  /** The snapshot-relevant state of the group's devices: each origin's table type, suspended flag and inactive slot. */
  async function origins(members: GroupMember[]): Promise<string[]> {
    const dm = ctx.dm();
    return Promise.all(members.map(async ({ origin }) => {
      const info = await dm.info(origin.name);
      return `${origin.name} ${(await dm.table(origin.name))[0].type}${info.suspended ? ' suspended' : ''}${info.inactiveTable ? ' staged' : ''}`;
    }));
  }

  describe('group snapshots', () => {
    it('takes one snapshot of each origin in one freeze, returned in the order given', async () => {
      const members = await group(3);
      const snaps = await snapshotGroup([members[2], members[0], members[1]]);
      expect(snaps.map((s) => s.info.originName)).toEqual([members[2], members[0], members[1]].map((m) => m.origin.name));
      expect(new Set(snaps.map((s) => s.freezeMs)).size).toBe(1);
      expect(await origins(members)).toEqual(members.map((m) => `${m.origin.name} snapshot-origin`));
      for (const snap of snaps) expect((await snap.status()).state).toBe('active');
      // Copy-on-write on every origin, and each snapshot dropped on its own.
      for (const { origin } of members) await env.writeThrough(origin.devicePath, 64 * 1024);
      for (const snap of snaps) expect((await snap.status()) as { dataSectors?: number }).toMatchObject({ dataSectors: expect.any(Number) });
      for (const snap of snaps) expect(((await snap.status()) as { dataSectors: number }).dataSectors).toBeGreaterThan(0);
      for (const snap of snaps) await snap.drop();
      expect(await origins(members)).toEqual(members.map((m) => `${m.origin.name} linear`));
      expect(env.runningGuardians()).toBe(0);
    });

    // Every step on the fake kernel and in the primary VM cell; in the other VM cells the
    // steps after which the kernel's state differs (tables staged, snapshots resumed, origins swapped).
    const allSteps: Step[] = ['validate', 'zero-cow', 'write-label', 'create-cow-device', 'create-snapshot-device', 'load-snapshot-table', 'load-origin-table', 'suspend-origin', 'resume-snapshot', 'resume-origin'];
    // (With udev, whose cells run the same calls, only after the snapshots are resumed.)
    const secondary = process.env.DMSNAP_VM_CELL_ROLE === 'secondary';
    const steps = secondary ? ((process.env.DMSNAP_VM_UDEV === '1' ? ['resume-snapshot'] : ['load-origin-table', 'resume-snapshot', 'resume-origin']) as Step[]) : allSteps;
    it.each(steps)('leaves every origin as it was after a failure right after step "%s" of either origin', async (failAfter) => {
      for (const member of failing) {
        const members = await group();
        const target = members[member].origin.name;
        const before = await ctx.state();
        const error = await snapshotGroup(members, {
          onStep: (step, origin) => {
            if (step === failAfter && origin === target) throw new Error(`injected after ${step} of ${origin}`);
          },
        }).catch((e: unknown) => e);
        expect((error as Error).message).toContain(`injected after ${failAfter} of ${target}`);
        if (failAfter !== 'validate') expect((error as Error).message).toMatch(new RegExp(`^group snapshot of .* failed at step "${failAfter}" of ${target} `));
        expect(await ctx.state()).toEqual(before);
        expect(env.runningGuardians()).toBe(0);
        // Every origin takes writes, and the next group snapshot works.
        for (const { origin } of members) await env.writeThrough(origin.devicePath, 64 * 1024);
        for (const snap of await snapshotGroup(members)) await snap.drop();
      }
    });

    // Inside the freeze no JavaScript runs: the environment seam makes the native freeze
    // fail right after the step of the origin DMSNAP_TEST_SEAM_ORIGIN names.
    it.each(['suspend-origin', 'resume-snapshot'] as const)('leaves every origin as it was after a failure inside the freeze right after "%s" of either origin', async (failAfter) => {
      for (const member of failing) {
        const members = await group();
        const sorted = members.map((m) => m.origin.name).sort();
        const before = await ctx.state();
        Object.assign(process.env, { DMSNAP_TEST_SEAMS: '1', DMSNAP_TEST_FAIL_AFTER: failAfter, DMSNAP_TEST_SEAM_ORIGIN: sorted[member] });
        const error = await snapshotGroup(members)
          .catch((e: unknown) => e)
          .finally(() => {
            for (const key of ['DMSNAP_TEST_SEAMS', 'DMSNAP_TEST_FAIL_AFTER', 'DMSNAP_TEST_SEAM_ORIGIN']) delete process.env[key];
          });
        expect((error as Error).message).toContain(`failed at step "${failAfter}" of ${sorted[member]} `);
        expect((error as Error).message).toContain(`test seam: failing after step "${failAfter}" of member ${member}`);
        expect(await ctx.state()).toEqual(before);
        expect(await origins(members)).toEqual(members.map((m) => `${m.origin.name} linear`));
      }
    });

    it('refuses an origin, a snapshot name or a COW named twice, before anything changes', async () => {
      const members = await group();
      const before = await ctx.state();
      await expect(snapshotGroup([members[0], { ...members[1], origin: members[0].origin }])).rejects.toThrow(/origin .* is named twice/);
      await expect(snapshotGroup([members[0], { ...members[1], cow: members[0].cow }])).rejects.toThrow(/COW .* is named twice/);
      await expect(snapshotGroup([{ ...members[0], name: 'x-same' }, { ...members[1], name: 'x-same' }])).rejects.toThrow(/snapshot x-same is named twice/);
      await expect(snapshotGroup([])).rejects.toThrow(/members must be an array of 1 to 16/);
      expect(await ctx.state()).toEqual(before);
    });

    it('takes its locks in one order: two groups of the same origins, named the other way round, both succeed', async () => {
      const [a, b] = await group();
      const cows = [await env.makeBlockDevice(2 * MiB), await env.makeBlockDevice(2 * MiB)];
      const [first, second] = await Promise.all([
        snapshotGroup([a, b]),
        snapshotGroup([
          { origin: b.origin, cow: cows[0], name: `${b.origin.name}-other` },
          { origin: a.origin, cow: cows[1], name: `${a.origin.name}-other` },
        ]),
      ]);
      for (const snap of [...first, ...second]) expect((await snap.status()).state).toBe('active');
      for (const snap of [...first, ...second]) await snap.drop();
    });
  });

  describe('hooks around the freeze', () => {
    it('runs pre-freeze before anything is written and post-thaw after every origin runs again', async () => {
      const members = await group();
      const before = await ctx.state();
      const seen: string[] = [];
      const snaps = await snapshotGroup(members, {
        hooks: {
          hookDir: false,
          preFreeze: async ({ phase, origins: names }) => {
            expect(await ctx.state()).toEqual(before);
            seen.push(`${phase} ${names.join(',')}`);
          },
          postThaw: async ({ phase, snapshots }) => {
            expect(await origins(members)).toEqual(members.map((m) => `${m.origin.name} snapshot-origin`));
            seen.push(`${phase} ${snapshots.join(',')}`);
          },
        },
      });
      expect(seen).toEqual([`pre-freeze ${members.map((m) => m.origin.name).join(',')}`, `post-thaw ${snaps.map((s) => s.name).join(',')}`]);
      for (const snap of snaps) await snap.drop();
    });

    it('aborts with nothing changed when pre-freeze fails, and runs no post-thaw for it', async () => {
      const members = await group();
      const before = await ctx.state();
      const thawed: string[] = [];
      const error = await snapshotGroup(members, {
        hooks: {
          hookDir: false,
          preFreeze: () => {
            throw new Error('the database refused to checkpoint');
          },
          postThaw: ({ phase }) => void thawed.push(phase),
        },
      }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'ERR_DMSNAP_HOOK_FAILED', message: expect.stringMatching(/the database refused to checkpoint/) });
      expect(thawed).toEqual([]);
      expect(await ctx.state()).toEqual(before);
      expect(env.runningGuardians()).toBe(0);
    });

    it('runs post-thaw when the snapshot failed, and reports a post-thaw failure with the snapshots it took', async () => {
      const members = await group();
      const before = await ctx.state();
      const thawed: string[] = [];
      const failed = await snapshotGroup(members, {
        hooks: { hookDir: false, preFreeze: () => undefined, postThaw: ({ phase }) => void thawed.push(phase) },
        onStep: (step) => {
          if (step === 'resume-snapshot') throw new Error('injected');
        },
      }).catch((e: unknown) => e);
      expect((failed as Error).message).toMatch(/failed at step "resume-snapshot"/);
      expect(thawed).toEqual(['post-thaw']);
      expect(await ctx.state()).toEqual(before);

      const error = await snapshotGroup(members, {
        hooks: {
          hookDir: false,
          postThaw: () => {
            throw new Error('the database did not resume');
          },
        },
      }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'ERR_DMSNAP_HOOK_FAILED', message: expect.stringMatching(/taken, but .*the database did not resume/) });
      const snaps = (error as { snapshots: { name: string; drop(): Promise<void>; status(): Promise<{ state: string }> }[] }).snapshots;
      expect(snaps).toHaveLength(2);
      for (const snap of snaps) expect((await snap.status()).state).toBe('active');
      for (const snap of snaps) await snap.drop();
    });

    it('drops the tracking snapshot an incremental update took when its post-thaw hook fails', async () => {
      const origin = await ctx.prepared();
      const before = await ctx.state();
      const hooks = { hookDir: false as const, postThaw: () => Promise.reject(new Error('the database did not resume')) };
      await expect(takeTracking(origin, { cow: await env.makeBlockDevice(2 * MiB), hooks })).rejects.toMatchObject({ code: 'ERR_DMSNAP_HOOK_FAILED' });
      expect(await ctx.state()).toEqual(before);
    });
  });
}
