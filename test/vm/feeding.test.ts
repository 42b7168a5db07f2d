/**
 * A crash never leaves a snapshot that silently stops receiving copy-on-write. After a
 * SIGKILL right after every step of snapshot and drop — and without `recover` — every
 * snapshot that `status` reports as active must still show the instant it was taken while
 * the origin is written, the next snapshot must either refuse (pointing at `recover`) or
 * give a snapshot the origin feeds, and `recover` must then restore every invariant.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { invariantViolations } from './support/invariants';
import { cli, createLoopDevice, run } from './support/system';

const MiB = 1024 * 1024;
const CLI = join(process.cwd(), 'dist/dmsnap.js');

/** The device's content, read with O_DIRECT: a page cache of the device would hide a change under it. */
const sha = (path: string) => run('bash', ['-c', `set -o pipefail; dd if=${path} bs=1M iflag=direct status=none | sha256sum`]).split(' ')[0];

interface StatusSnapshot {
  name: string;
  device: string;
  state: string;
}

describe('snapshots stay fed by their origin across crashes', () => {
  const name = `feed${process.pid}`;
  let dir: string;
  const cows: string[] = [];
  let writes = 0;

  beforeAll(() => {
    const disk = createLoopDevice(32 * MiB);
    for (let i = 0; i < 2; i++) cows.push(createLoopDevice(16 * MiB));
    expect(cli(['prepare', disk, '--name', name]).status).toBe(0);
    run('mkfs.ext4', ['-q', `/dev/mapper/${name}`]);
    dir = mkdtempSync('/tmp/dmsnap-feed-');
    run('mount', [`/dev/mapper/${name}`, dir]);
    writeFileSync(join(dir, 'base'), randomBytes(4 * MiB));
    run('sync', []);
  });

  afterAll(() => {
    cli(['recover', '-q']);
    cli(['drop', name, '-q']);
    run('umount', [dir]);
    expect(cli(['release', name]).status).toBe(0);
  });

  // Each case starts from a clean state, whatever the one before left.
  beforeEach(() => {
    cli(['recover', '-q']);
    cli(['drop', name, '-q']);
    expect(invariantViolations()).toEqual([]);
  });

  function snapshotsInStatus(): StatusSnapshot[] {
    const result = cli(['status', name, '--json']);
    expect(result.status).toBe(0);
    return JSON.parse(result.stdout).origins[0].snapshots;
  }

  /** Writes over the origin's blocks and syncs, then checks every snapshot called active still reads as before. */
  function expectActiveSnapshotsFed(): void {
    const active = snapshotsInStatus().filter((s) => s.state === 'active');
    const before = active.map((s) => sha(s.device));
    writeFileSync(join(dir, 'base'), randomBytes(4 * MiB));
    writeFileSync(join(dir, `w${writes++ % 4}`), randomBytes(MiB));
    run('sync', []);
    active.forEach((s, i) => expect({ snapshot: s.name, sha: sha(s.device) }).toEqual({ snapshot: s.name, sha: before[i] }));
  }

  const seam = (step: string) => ({ ...process.env, DMSNAP_TEST_SEAMS: '1', DMSNAP_TEST_KILL_AFTER: step });

  function killedAfter(step: string, args: string[]): void {
    const result = spawnSync(process.execPath, [CLI, ...args], { env: seam(step), encoding: 'utf8' });
    expect({ step, signal: result.signal }).toEqual({ step, signal: 'SIGKILL' });
  }

  function afterTheCrash(): void {
    // Without recover: what status calls active is fed.
    expectActiveSnapshotsFed();
    // The next snapshot refuses (and says to recover), or works and is fed.
    const next = cli(['snapshot', name, '--cow', cows[1], '--snapshot-name', `${name}-next`, '-q']);
    if (next.status === 0) {
      expect(snapshotsInStatus().find((s) => s.name === `${name}-next`)?.state).toBe('active');
      expectActiveSnapshotsFed();
    } else {
      expect(next.stderr).toMatch(/dmsnap recover/);
    }
    const recovered = cli(['recover', '-q']);
    expect(recovered.status).toBe(0);
    expect(invariantViolations()).toEqual([]);
    expectActiveSnapshotsFed();
    expect(cli(['drop', name, '-q']).status).toBe(0);
    expect(invariantViolations()).toEqual([]);
  }

  // The steps that leave a different kernel state behind (a table staged in an inactive
  // slot, a snapshot the origin does not feed, a complete snapshot, snapshot-origin without a
  // snapshot); the others leave one of these. The primary cell's crash test kills after every step.

  it.each(['load-origin-table', 'resume-snapshot', 'resume-origin'])(
    'after a SIGKILL right after snapshot step "%s"',
    (step) => {
      killedAfter(step, ['snapshot', name, '--cow', cows[0]]);
      afterTheCrash();
    },
  );

  it.each(['remove-snapshot', 'load-linear-table'])('after a SIGKILL right after drop step "%s"', (step) => {
    expect(cli(['snapshot', name, '--cow', cows[0], '-q']).status).toBe(0);
    killedAfter(step, ['drop', name]);
    afterTheCrash();
  });
});
