/**
 * Rollback against the fake kernel: the refusals (a mounted origin, a transient or invalid
 * snapshot, several snapshots and none named), the tables a rollback leaves, the guardian
 * it starts, and a failure after each step. The fake merges at once; a merge that runs
 * for a while, and the bytes the kernel copies back, are proven in test/vm/rollback.test.ts.
 */
import { DeviceMapper, prepare, type Origin } from '../../lib';
import { fakeCliFixture } from '../support/fake-cli';

const MiB = 1024 * 1024;
const fx = fakeCliFixture('dmsnap-rollback-locks-');
const cli = fx.cli;

/** The live and inactive table of every device, and whether it is suspended: all a rollback may change. */
function kernelState(): Record<string, string> {
  return Object.fromEntries(
    [...fx.system.devices.values()].map((d) => [
      d.name,
      `${(d.live?.targets ?? []).map((t) => `${t.type} ${t.params}`).join('\n')}|${d.inactive ? 'inactive' : ''}|${d.suspended ? 'suspended' : ''}`,
    ]),
  );
}

const liveTable = (name: string) => kernelState()[name]?.split('|')[0];

async function origin(name: string): Promise<{ dm: DeviceMapper; origin: Origin }> {
  const dm = await DeviceMapper.open({ binding: fx.system.binding, devDir: fx.devDir, udev: false });
  return { dm, origin: await prepare(fx.system.addLoopDevice(32 * MiB), { dm, lockDir: fx.lockDir, name }) };
}

describe('dmsnap rollback (fake kernel)', () => {
  it('merges the snapshot back: NAME ends on its linear table, the snapshot gone, under a guardian of NAME and the snapshot', async () => {
    const { dm, origin: md } = await origin('rb1');
    const snap = await md.snapshot({ cow: fx.system.addLoopDevice(8 * MiB) });
    fx.system.writeOrigin('rb1', 256);
    const guardiansBefore = fx.system.guardianLog.length;
    expect(await cli(['rollback', 'rb1', '--wait', '-q'])).toEqual({ status: 0, stdout: '', stderr: '' });
    expect(fx.system.devices.has(snap.name)).toBe(false);
    expect(liveTable('rb1')).toBe(liveTable('rb1-real'));
    expect(Object.values(kernelState()).filter((s) => /inactive|suspended/.test(s))).toEqual([]);
    const started = fx.system.guardianLog.slice(guardiansBefore).map((g) => g.originUuid);
    expect(started).toEqual([`${md.originUuid},DMSNAP-${md.originId}-snap-${snap.info.snapId}`]);
    expect(fx.system.guardianLog.slice(guardiansBefore).every((g) => g.finished === 'done')).toBe(true);
    dm.close();
  });

  it('keeps a second snapshot, fed by snapshot-origin again once the merge is finished', async () => {
    const { dm, origin: md } = await origin('rb2');
    await md.snapshot({ cow: fx.system.addLoopDevice(8 * MiB), name: 'rb2-a' });
    await md.snapshot({ cow: fx.system.addLoopDevice(8 * MiB), name: 'rb2-b' });
    expect(await cli(['rollback', 'rb2', '--wait', '-q'])).toMatchObject({ status: 2, stderr: expect.stringMatching(/2 snapshots \(rb2-a, rb2-b\): name one with --snapshot-name/) });
    expect(await cli(['rollback', 'rb2', '--snapshot-name', 'rb2-c'])).toMatchObject({ status: 2, stderr: expect.stringMatching(/no snapshot named "rb2-c"/) });
    expect(await cli(['rollback', 'rb2', '--snapshot-name', 'rb2-a', '--wait', '-q'])).toMatchObject({ status: 0, stderr: '' });
    expect(fx.system.devices.has('rb2-a')).toBe(false);
    expect(liveTable('rb2')).toMatch(/^snapshot-origin /);
    const status = JSON.parse((await cli(['status', 'rb2', '--json'])).stdout);
    expect(status.origins[0].snapshots.map((s: { name: string; state: string }) => `${s.name}:${s.state}`)).toEqual(['rb2-b:active']);
    expect(status.origins[0].merge).toBeNull();
    dm.close();
  });

  it('refuses a mounted origin (exit 4), a transient snapshot (exit 1) and an invalid one (exit 3), changing nothing', async () => {
    const { dm, origin: md } = await origin('rb3');
    const cow = fx.system.addLoopDevice(1 * MiB);
    await md.snapshot({ cow });
    const before = kernelState();
    const close = fx.system.openBlockDevice('rb3', { exclusive: true });
    expect(await cli(['rollback', 'rb3'])).toMatchObject({ status: 4, stderr: expect.stringMatching(/mounted or held.*unmount it/) });
    close();
    const held = fx.system.openBlockDevice('rb3');
    expect(await cli(['rollback', 'rb3'])).toMatchObject({ status: 4, stderr: expect.stringMatching(/open \(open count 1 besides dmsnap\)/) });
    held();
    expect(kernelState()).toEqual(before);

    // More origin writes than the 1 MiB COW holds: the snapshot is invalid.
    fx.system.writeOrigin('rb3', 4096);
    expect(await cli(['rollback', 'rb3'])).toMatchObject({ status: 3, stderr: expect.stringMatching(/is invalid: it no longer holds the origin's old blocks/) });
    expect(await cli(['drop', 'rb3'])).toMatchObject({ status: 0 });

    await md.snapshot({ cow: fx.system.addLoopDevice(4 * MiB), persistent: false });
    const transient = kernelState();
    expect(await cli(['rollback', 'rb3'])).toMatchObject({ status: 1, stderr: expect.stringMatching(/transient \(N\): the kernel merges only a persistent exception store/) });
    expect(kernelState()).toEqual(transient);
    dm.close();
  });

  it('usage errors exit 2 before the kernel is touched', async () => {
    expect(await cli(['rollback'])).toMatchObject({ status: 2, stdout: '' });
    expect(await cli(['rollback', 'a', 'b'])).toMatchObject({ status: 2, stdout: '' });
    expect(await cli(['rollback', 'a', '--frobnicate'])).toMatchObject({ status: 2, stdout: '' });
    expect(await cli(['rollback', '--help'])).toMatchObject({ status: 0, stderr: '', stdout: expect.stringMatching(/^Usage: dmsnap rollback [\s\S]*Example/) });
  });
});

const START_STEPS = ['load-merge-table', 'suspend-snapshot'] as const;
const MERGING_STEPS = ['start-merge', 'resume-merged-snapshot'] as const;
const FINISH_STEPS = ['load-final-table', 'swap-final-table', 'remove-merged-snapshot'] as const;

describe('a rollback that fails after a step (fake kernel)', () => {
  it.each(START_STEPS)('after %s: NAME runs its previous table, the snapshot is live and active, nothing suspended or staged', async (step) => {
    const { dm, origin: md } = await origin('rbs');
    const snap = await md.snapshot({ cow: fx.system.addLoopDevice(8 * MiB) });
    const before = kernelState();
    const failing = snap.rollback({ wait: true, onStep: async (s) => { if (s === step) throw new Error('injected'); } });
    await expect(failing).rejects.toMatchObject({ message: expect.stringMatching(new RegExp(`failed at step "${step}": injected.*runs its previous table; nothing was merged`)) });
    expect(kernelState()).toEqual(before);
    expect((await snap.status()).state).toBe('active');
    // And it can be rolled back after all.
    await snap.rollback({ wait: true });
    expect(liveTable('rbs')).toBe(liveTable('rbs-real'));
    dm.close();
  });

  it.each(MERGING_STEPS)('after %s: the merge runs, nothing is suspended, and the next wait finishes it', async (step) => {
    const { dm, origin: md } = await origin('rbm');
    const snap = await md.snapshot({ cow: fx.system.addLoopDevice(8 * MiB) });
    const failing = snap.rollback({ wait: true, onStep: async (s) => { if (s === step) throw new Error('injected'); } });
    await expect(failing).rejects.toMatchObject({ message: expect.stringMatching(/The merge runs: "dmsnap rollback rbm --wait" finishes it/) });
    expect(Object.values(kernelState()).filter((s) => /inactive|suspended/.test(s))).toEqual([]);
    expect(liveTable('rbm')).toMatch(/^snapshot-merge /);
    await md.waitForMerge();
    expect(fx.system.devices.has(snap.name)).toBe(false);
    expect(liveTable('rbm')).toBe(liveTable('rbm-real'));
    dm.close();
  });

  it.each(FINISH_STEPS)('after %s: NAME is live with no staged table, and recover (or the next wait) finishes it', async (step) => {
    const { dm, origin: md } = await origin('rbf');
    const snap = await md.snapshot({ cow: fx.system.addLoopDevice(8 * MiB) });
    await expect(snap.rollback({ wait: true, onStep: async (s) => { if (s === step) throw new Error('injected'); } })).rejects.toThrow('injected');
    expect(Object.values(kernelState()).filter((s) => /inactive|suspended/.test(s))).toEqual([]);
    const recovered = JSON.parse((await cli(['recover', '--json'])).stdout);
    if (step === 'load-final-table') expect(recovered.actions).toContainEqual(expect.objectContaining({ device: 'rbf', action: 'finished-merge' }));
    expect(fx.system.devices.has(snap.name)).toBe(false);
    expect(liveTable('rbf')).toBe(liveTable('rbf-real'));
    dm.close();
  });
});
