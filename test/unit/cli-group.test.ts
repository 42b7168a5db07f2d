/**
 * `dmsnap snapshot NAME... --cow DEVICE...` (a group snapshot) and the hook options,
 * against the fake kernel: output, pairing, usage errors before anything is touched, and
 * what the hooks see and do. The data consistency of a group is proven in
 * test/vm/group.test.ts.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fakeCliFixture } from '../support/fake-cli';

const MiB = 1024 * 1024;
const fx = fakeCliFixture('dmsnap-cli-group-locks-');
const cli = fx.cli;

function tables(): Record<string, string> {
  return Object.fromEntries([...fx.system.devices.values()].map((d) => [d.name, (d.live?.targets ?? []).map((t) => `${t.type} ${t.params}`).join('\n')]));
}

async function origins(...names: string[]): Promise<string[]> {
  const cows: string[] = [];
  for (const name of names) {
    expect((await cli(['prepare', fx.system.addLoopDevice(16 * MiB), '--name', name])).status).toBe(0);
    cows.push(fx.system.addLoopDevice(4 * MiB));
  }
  return cows;
}

describe('dmsnap snapshot with several origins (fake kernel)', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'dmsnap-hooks-'));
    chmodSync(dir, 0o700);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('takes one snapshot of each, pairs the COWs in order, and prints the devices in the order of the names', async () => {
    const [cowA, cowB] = await origins('ga', 'gb');
    const taken = await cli(['snapshot', 'gb', 'ga', '--cow', cowB, '--cow', cowA, '--snapshot-name', 'gb-s', '--snapshot-name', 'ga-s']);
    expect(taken).toMatchObject({ status: 0, stdout: `${fx.devDir}/gb-s\n${fx.devDir}/ga-s\n`, stderr: expect.stringMatching(/^dmsnap: gb, ga were frozen for \d+\.\d ms\n$/) });
    expect(tables()['ga']).toMatch(/^snapshot-origin /);
    expect(tables()['gb']).toMatch(/^snapshot-origin /);
    const status = JSON.parse((await cli(['status', '--json'])).stdout);
    const cowOf = (origin: string) => status.origins.find((o: { name: string }) => o.name === origin).snapshots[0].cow;
    expect([cowOf('ga'), cowOf('gb')]).toEqual([cowA, cowB]);
  });

  it('refuses with exit 2, before anything is touched, every group the options cannot pair', async () => {
    const [cowA, cowB] = await origins('ua', 'ub');
    const before = tables();
    const usage = async (args: string[], message: RegExp) => expect(await cli(['snapshot', ...args])).toMatchObject({ status: 2, stdout: '', stderr: expect.stringMatching(message) });
    await usage(['ua', 'ub', '--cow', cowA], /one --cow per NAME, paired in order: 2 NAME\(s\), 1 --cow/);
    await usage(['ua', '--cow', cowA, '--cow', cowB], /1 NAME\(s\), 2 --cow/);
    await usage(['ua', 'ub', '--cow', cowA, '--cow-file', join(dir, 'f')], /not both/);
    await usage(['ua', 'ua', '--cow', cowA, '--cow', cowB], /each NAME once/);
    await usage(['ua', 'ub', '--cow', cowA, '--cow', cowA], /each --cow once/);
    await usage(['ua', 'ub', '--cow', cowA, '--cow', cowB, '--snapshot-name', 'x'], /--snapshot-name once per NAME or not at all/);
    await usage(['ua', 'ub', '--cow', cowA, '--cow', cowB, '--cow-size', '1G'], /--cow-size sizes a COW file/);
    await usage(['ua', '--cow', cowA, '--hook-timeout', 'banana'], /--hook-timeout must be a number of seconds/);
    await usage(['ua', '--cow', cowA, '--hook-dir', 'relative/dir'], /--hook-dir needs an absolute path/);
    await usage(['ua', '--cow', cowA, '--hook-dir', dir, '--no-hooks'], /--hook-dir DIR or --no-hooks, not both/);
    await usage(['ua', '--cow', cowA, '--pre-freeze', ' '], /--pre-freeze needs a value/);
    const many = Array.from({ length: 17 }, (_, i) => `o${i}`);
    await usage([...many, ...many.flatMap(() => ['--cow', cowA])], /unexpected argument "o16"/);
    expect(tables()).toEqual(before);
  });

  it('runs the hooks around the freeze, with the origins and snapshots in the environment, output on stderr only', async () => {
    const [cowA, cowB] = await origins('ha', 'hb');
    const log = join(dir, 'log');
    const hooks = join(dir, 'hooks.d');
    rmSync(hooks, { force: true, recursive: true });
    mkdirSync(hooks, { mode: 0o755 });
    writeFileSync(join(hooks, '10-db'), `#!/bin/sh\necho "dir $1 $DMSNAP_ORIGINS" >> ${log}\necho chatter\n`, { mode: 0o755 });
    const pre = `echo "pre $DMSNAP_HOOK_PHASE $DMSNAP_ORIGINS $DMSNAP_SNAPSHOTS" >> ${log}`;
    const post = `echo "post $DMSNAP_HOOK_PHASE" >> ${log}`;
    const taken = await cli(['snapshot', 'ha', 'hb', '--cow', cowA, '--cow', cowB, '--hook-dir', hooks, '--pre-freeze', pre, '--post-thaw', post]);
    expect(taken).toMatchObject({ status: 0, stdout: `${fx.devDir}/ha-snap\n${fx.devDir}/hb-snap\n` });
    expect(taken.stderr).toContain('chatter');
    expect(readFileSync(log, 'utf8')).toBe(['dir pre-freeze ha hb', 'pre pre-freeze ha hb ha-snap hb-snap', 'post post-thaw', 'dir post-thaw ha hb', ''].join('\n'));
  });

  it('aborts with exit 1 and nothing changed when a pre-freeze hook fails, and runs post-thaw when the snapshot fails', async () => {
    const [cowA, cowB] = await origins('fa', 'fb');
    const before = tables();
    const marker = join(dir, 'thawed');
    const failed = await cli(['snapshot', 'fa', 'fb', '--cow', cowA, '--cow', cowB, '--no-hooks', '--pre-freeze', 'exit 3', '--post-thaw', `touch ${marker}`]);
    expect(failed).toMatchObject({ status: 1, stdout: '', stderr: expect.stringMatching(/exit 3|status 3/) });
    expect(tables()).toEqual(before);
    expect(existsSync(marker)).toBe(false);
    // The snapshot itself fails after the pre-freeze (here after its freeze): post-thaw runs all the same.
    Object.assign(process.env, { DMSNAP_TEST_SEAMS: '1', DMSNAP_TEST_FAIL_AFTER: 'resume-origin' });
    const broken = await cli(['snapshot', 'fa', 'fb', '--cow', cowA, '--cow', cowB, '--no-hooks', '--pre-freeze', 'true', '--post-thaw', `touch ${marker}`]).finally(() => {
      delete process.env.DMSNAP_TEST_SEAMS;
      delete process.env.DMSNAP_TEST_FAIL_AFTER;
    });
    expect(broken).toMatchObject({ status: 1, stdout: '', stderr: expect.stringMatching(/failed at step "resume-origin" of fa/) });
    expect(existsSync(marker)).toBe(true);
    expect(tables()).toEqual(before);
    // Only the post-thaw failed: the snapshots stand, their devices on stdout, exit 1.
    const thawFailed = await cli(['snapshot', 'fa', 'fb', '--cow', cowA, '--cow', cowB, '--no-hooks', '--post-thaw', 'exit 5']);
    expect(thawFailed).toMatchObject({ status: 1, stdout: `${fx.devDir}/fa-snap\n${fx.devDir}/fb-snap\n`, stderr: expect.stringMatching(/taken, but .*status 5/) });
    expect(tables()['fa']).toMatch(/^snapshot-origin /);
  });
});
