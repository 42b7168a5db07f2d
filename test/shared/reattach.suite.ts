/**
 * Detach and attach again: part of the shared lifecycle suite (fake binding and real
 * kernel). A clean detach seals the snapshots on their COWs; prepare --attach brings them
 * back only while the origin shows the sealed fingerprint. The tests across a real reboot
 * are in test/vm/reboot/.
 */
import { prepare, recover, type AttachResult, type DeviceMapper, type Step } from '../../lib';
import { System } from '../../lib/system/system';
import { LABEL_AREA_BYTES, readLabel } from '../../lib/targets/cow-label';
import type { LifecycleEnvironment } from './lifecycle.suite';

const MiB = 1024 * 1024;

export interface ReattachContext {
  env: LifecycleEnvironment;
  dm(): DeviceMapper;
  freshName(): string;
  state(): Promise<string[]>;
}

export function reattachSuite(ctx: ReattachContext): void {
  const { env } = ctx;
  const options = () => ({ dm: ctx.dm(), lockDir: env.lockDir, lockTimeoutMs: 5000 });

  async function labelOf(cow: string) {
    const device = await System.of(ctx.dm()).openBlockDevice(cow, { exclusive: false, writable: false });
    try {
      return readLabel(await device.read(0, LABEL_AREA_BYTES, { direct: true }))?.label;
    } finally {
      device.close();
    }
  }

  /** An ext4 origin with a snapshot on its own COW and 1 MiB written since; its status then. */
  async function snapshotted() {
    const device = await env.makeBlockDevice(16 * MiB);
    await env.formatExt4(device);
    const name = ctx.freshName();
    const origin = await prepare(device, { ...options(), name });
    const cow = await env.makeBlockDevice(4 * MiB);
    const snap = await origin.snapshot({ cow });
    await env.writeThrough(origin.devicePath, 1 * MiB, 8 * MiB);
    return { device, name, origin, cow, snap, before: await snap.status() };
  }

  /** snapshotted(), then detached. */
  async function detached() {
    const made = await snapshotted();
    return { ...made, report: await made.origin.detach() };
  }

  async function attach(device: string, name: string, cows: string[]) {
    const results: AttachResult[] = [];
    const origin = await prepare(device, { ...options(), name, attach: cows, onAttach: (r) => results.push(r) });
    return { origin, results };
  }

  describe('detach, and prepare --attach', () => {
    it('seals the snapshot on its COW, and brings it back as it was: same ids, same exceptions, copy-on-write going on', async () => {
      const { device, name, origin, cow, snap, before, report } = await detached();
      expect(report).toEqual({ origin: name, fs: 'ext4', sealed: [{ snapshot: snap.name, cow: expect.any(String), state: 'active' }], dropped: [], rollbackAtBoot: null });
      expect((await ctx.state()).filter((line) => line.startsWith(`${name} `) || line.startsWith(`${name}-`))).toEqual([]);
      expect((await labelOf(cow))?.seal).toMatchObject({ fs: 'ext4', digest: expect.stringMatching(/^[0-9a-f]{64}$/) });

      const { origin: again, results } = await attach(device, name, [cow]);
      expect(results).toEqual([{ cow, snapshot: snap.name, outcome: 'attached', reason: null }]);
      expect(again.originId).toBe(origin.originId);
      const [back] = await again.snapshots();
      expect(back.info).toMatchObject({ name: snap.name, snapId: snap.info.snapId, persistent: true, chunkSectors: snap.info.chunkSectors });
      const status = await back.status();
      expect(status).toMatchObject({ state: 'active', allocatedSectors: before.allocatedSectors });
      // Attached, the label is no longer sealed: a crash from here on proves nothing.
      expect((await labelOf(cow))?.seal).toBeNull();
      expect((await ctx.dm().table(name))[0].type).toBe('snapshot-origin');
      await env.writeThrough(again.devicePath, 1 * MiB, 12 * MiB);
      expect((await back.status()).allocatedSectors!).toBeGreaterThan(before.allocatedSectors!);
      expect((await recover(options())).filter((a) => a.origin === name).map((a) => a.action)).toEqual(['kept']);
      await back.drop();
      expect(await labelOf(cow)).toBeUndefined();
      await again.release();
    });

    it('refuses a COW whose origin was written while detached, one never sealed and one without a label; the origin is prepared all the same', async () => {
      const { device, name, cow } = await detached();
      await env.writeFilesystem(device);
      const sealed = await labelOf(cow);
      const first = await attach(device, name, [cow]);
      expect(first.results).toEqual([{ cow, snapshot: null, outcome: 'refused', reason: expect.stringMatching(/written since .* was detached/) }]);
      expect(await first.origin.snapshots()).toEqual([]);
      expect((await ctx.dm().table(name))[0].type).toBe('linear');
      // Refused, the COW is left as it was: never written.
      expect(await labelOf(cow)).toEqual(sealed);

      // A snapshot whose origin went without a detach (a crash): its label was never sealed.
      const other = await env.makeBlockDevice(4 * MiB);
      const crashed = await first.origin.snapshot({ cow: other, name: `${name}-crash` });
      // A rollback recorded for the next boot is not made after a crash either.
      await crashed.rollback({ atBoot: true });
      for (const device of [name, crashed.name, `${crashed.name}-cow`, `${name}-real`]) await ctx.dm().remove(device, { retry: true });
      const blank = await env.makeBlockDevice(4 * MiB);
      const second = await attach(device, name, [other, blank]);
      expect(second.results).toEqual([
        { cow: other, snapshot: null, outcome: 'refused', reason: expect.stringMatching(/not detached cleanly.*the rollback recorded with --at-boot is not made$/) },
        { cow: blank, snapshot: null, outcome: 'refused', reason: 'it carries no dmsnap label' },
      ]);
      expect((await ctx.dm().table(name))[0].type).toBe('linear');
      expect(await labelOf(other)).toMatchObject({ state: 'active', rollbackAtBoot: expect.any(String), seal: null });
      await second.origin.release();
    });

    it('rollback at boot: recorded with the origin in use, changing nothing in the kernel; kept by the detach; started by the attach before NAME exists', async () => {
      const { device, name, origin, cow, snap } = await snapshotted();
      const held = await System.of(ctx.dm()).openBlockDevice(origin.devicePath, { exclusive: false, writable: false });
      try {
        await expect(snap.rollback()).rejects.toMatchObject({ code: 'EBUSY' });
        const before = await ctx.state();
        await snap.rollback({ atBoot: true });
        expect(await ctx.state()).toEqual(before);
      } finally {
        held.close();
      }
      expect(await origin.rollbackAtBoot()).toEqual({ snapshot: snap.name, scheduledAt: expect.any(String) });
      expect((await origin.status()).rollbackAtBoot).toMatchObject({ snapshot: snap.name });
      // Another snapshot cannot be recorded too, nor one that cannot outlive a reboot.
      const transient = await origin.snapshot({ cow: await env.makeBlockDevice(4 * MiB), persistent: false, name: `${name}-t` });
      await expect(transient.rollback({ atBoot: true })).rejects.toMatchObject({ code: 'ERR_DMSNAP_NOT_PERSISTENT' });
      const second = await origin.snapshot({ cow: await env.makeBlockDevice(4 * MiB), name: `${name}-2` });
      await expect(second.rollback({ atBoot: true })).rejects.toMatchObject({ code: 'ERR_DMSNAP_MERGING' });
      await expect(snap.rollback({ atBoot: true, wait: true })).rejects.toThrow(/^wait must be false or absent with atBoot/);
      expect(await origin.cancelRollbackAtBoot()).toBe(snap.name);
      expect(await origin.rollbackAtBoot()).toBeNull();
      expect(await origin.cancelRollbackAtBoot()).toBeNull();
      for (const other of [transient, second]) await other.drop();

      await snap.rollback({ atBoot: true });
      expect((await origin.detach()).rollbackAtBoot).toBe(snap.name);
      expect(await labelOf(cow)).toMatchObject({ state: 'active', rollbackAtBoot: expect.any(String), seal: { fs: 'ext4' } });
      const { origin: again, results } = await attach(device, name, [cow]);
      expect(results).toEqual([{ cow, snapshot: snap.name, outcome: 'rollback-started', reason: null }]);
      expect((await ctx.dm().table(name))[0].type).toBe('snapshot-merge');
      expect(await labelOf(cow)).toMatchObject({ state: 'merging', rollbackAtBoot: null, seal: null });
      await again.waitForMerge({ pollMs: 50 });
      expect((await ctx.dm().table(name))[0].type).toBe('linear');
      expect(await labelOf(cow)).toBeUndefined();
      await again.release();
    });

    // A detach undoes nothing when it fails: what a failure leaves is what a kill leaves.
    it.each([
      ['remove-origin', 'refused'],
      ['seal-label', 'attached'],
      ['remove-snapshot', 'attached'],
      ['remove-real', 'attached'],
    ] as const)('stopped after step %s, recover leaves a consistent state, and the attach gives %s', async (step, outcome) => {
      const { device, name, origin, cow, snap, before } = await snapshotted();
      const stop = async (at: Step) => {
        if (at === step) throw new Error(`test: stopped after ${at}`);
      };
      await expect(origin.detach({ onStep: stop })).rejects.toThrow(`test: stopped after ${step}`);
      await recover(options());
      expect((await ctx.state()).filter((line) => line.startsWith(`${name} `) || line.startsWith(`${name}-`))).toEqual([]);
      const { origin: again, results } = await attach(device, name, [cow]);
      expect(results).toEqual([
        outcome === 'attached'
          ? { cow, snapshot: snap.name, outcome, reason: null }
          : { cow, snapshot: null, outcome, reason: 'it carries no dmsnap label' },
      ]);
      for (const back of await again.snapshots()) {
        expect(await back.status()).toMatchObject({ state: 'active', allocatedSectors: before.allocatedSectors });
        await back.drop();
      }
      await again.release();
    });

    it('refuses to detach a mounted origin, or one whose content has no fingerprint, changing nothing', async () => {
      const device = await env.makeBlockDevice(16 * MiB);
      const name = ctx.freshName();
      const origin = await prepare(device, { ...options(), name });
      const cow = await env.makeBlockDevice(4 * MiB);
      const snap = await origin.snapshot({ cow });
      const before = await ctx.state();
      await expect(origin.detach()).rejects.toMatchObject({ code: 'ERR_DMSNAP_NO_FINGERPRINT' });
      expect(await ctx.state()).toEqual(before);
      expect((await labelOf(cow))?.seal).toBeNull();
      const held = await System.of(ctx.dm()).openBlockDevice(origin.devicePath, { exclusive: false, writable: false });
      try {
        await expect(origin.detach()).rejects.toMatchObject({ code: 'EBUSY' });
      } finally {
        held.close();
      }
      expect(await ctx.state()).toEqual(before);
      await snap.drop();
      await origin.release();
    });
  });
}
