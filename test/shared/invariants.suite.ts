/**
 * The lifecycle never builds on a broken state, and says so: part of the shared lifecycle
 * suite (fake binding and real kernel). Each test makes, with raw device-mapper calls, a
 * state an interrupted dmsnap call leaves behind, then checks what snapshot, drop, status
 * and recover do with it.
 */
import { recover, type DeviceMapper, type Origin, type Step } from '../../lib';
import type { LifecycleEnvironment } from './lifecycle.suite';

const MiB = 1024 * 1024;

/** What the lifecycle suite lends these tests. */
export interface InvariantsContext {
  env: LifecycleEnvironment;
  dm(): DeviceMapper;
  prepared(): Promise<Origin>;
  state(): Promise<string[]>;
}

export function invariantsSuite(ctx: InvariantsContext): void {
  const { env } = ctx;

  /** Puts the origin back on its linear table by hand, as a crash between the two resumes leaves it. */
  async function unhookOrigin(origin: Origin): Promise<void> {
    const dm = ctx.dm();
    await dm.load(origin.name, await dm.table(origin.realName));
    await dm.suspend(origin.name, { skipLockfs: true });
    await dm.resume(origin.name);
  }

  describe('invariants', () => {
    it('refuses to snapshot while a table waits in the origin\'s inactive slot, and recover clears it', async () => {
      const dm = ctx.dm();
      const origin = await ctx.prepared();
      const first = await origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB), name: `${origin.name}-s1` });
      // A drop killed after it staged the linear table.
      await dm.load(origin.name, await dm.table(origin.realName));
      const before = await ctx.state();
      const error = await origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB), name: `${origin.name}-s2` }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'ERR_DMSNAP_INCONSISTENT', message: expect.stringMatching(/inactive slot.*dmsnap recover/) });
      expect(await ctx.state()).toEqual(before);
      expect((await dm.info(origin.name)).inactiveTable).toBe(true);
      const actions = (await recover({ dm, lockDir: env.lockDir })).filter((a) => a.device.startsWith(origin.name));
      expect(actions.map((a) => `${a.action} ${a.device}`)).toEqual([`cleared-inactive-table ${origin.name}`, `kept ${first.name}`]);
      const second = await origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB), name: `${origin.name}-s2` });
      expect((await dm.table(origin.name))[0].type).toBe('snapshot-origin');
      expect((await second.status()).state).toBe('active');
      await second.drop();
      await first.drop();
      expect(await dm.table(origin.name)).toEqual(await dm.table(origin.realName));
    });

    it('reports a snapshot its origin does not feed as orphaned, refuses to build on it, and recover removes it', async () => {
      const dm = ctx.dm();
      const origin = await ctx.prepared();
      const snap = await origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB) });
      await unhookOrigin(origin);
      expect((await snap.status()).state).toBe('orphaned');
      expect((await origin.status()).snapshots.map((s) => s.state)).toEqual(['orphaned']);
      await expect(origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB), name: `${origin.name}-x` })).rejects.toMatchObject({
        code: 'ERR_DMSNAP_INCONSISTENT',
        message: expect.stringMatching(/receive no copy-on-write/),
      });
      await expect(snap.drop()).rejects.toMatchObject({ code: 'ERR_DMSNAP_INCONSISTENT' });
      const actions = (await recover({ dm, lockDir: env.lockDir })).filter((a) => a.device.startsWith(origin.name));
      expect(actions.map((a) => `${a.action} ${a.device}`)).toEqual([`removed ${snap.name}`, `removed ${snap.name}-cow`]);
      expect(await dm.find(snap.name)).toBeUndefined();
      expect(await dm.find(`${snap.name}-cow`)).toBeUndefined();
      expect(await dm.table(origin.name)).toEqual(await dm.table(origin.realName));
    });

    it('removes a snapshot while the origin runs, and suspends it only to restore the linear table', async () => {
      const dm = ctx.dm();
      const origin = await ctx.prepared();
      const a = await origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB), name: `${origin.name}-a` });
      const b = await origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB), name: `${origin.name}-b` });
      const seen: string[] = [];
      const record = async (step: Step) => {
        seen.push(`${step} ${(await dm.info(origin.name)).suspended ? 'suspended' : 'live'}`);
      };
      await origin.dropSnapshot(a, { onStep: record });
      expect(seen).toEqual(['remove-snapshot live']);
      expect((await b.status()).state).toBe('active');
      seen.length = 0;
      await origin.dropSnapshot(b, { onStep: record });
      expect(seen).toEqual(['remove-snapshot live', 'load-linear-table live', 'suspend-origin suspended', 'resume-origin live']);
      expect(await dm.table(origin.name)).toEqual(await dm.table(origin.realName));
    });

    it('builds on snapshot-origin left without a snapshot, and the next drop restores the linear table', async () => {
      const dm = ctx.dm();
      const origin = await ctx.prepared();
      const first = await origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB) });
      // A drop killed right after it removed the snapshot.
      await dm.remove(first.name);
      const next = await origin.snapshot({ cow: await env.makeBlockDevice(2 * MiB), name: `${origin.name}-next` });
      expect((await next.status()).state).toBe('active');
      await next.drop();
      expect(await dm.table(origin.name)).toEqual(await dm.table(origin.realName));
    });
  });
}
