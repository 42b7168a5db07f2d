/**
 * Crashes at every step of snapshot and drop: the process is SIGKILLed right after the
 * step (a test-only seam), and then the origin must take writes within a second (the
 * guardian resumes it), `dmsnap recover` must leave a clean state, no data may be lost,
 * and the next snapshot cycle must work. Then random SIGKILLs over rapid cycles (10 in the
 * primary cell, 5 in the others, which leave the per-step kills to the feeding test).
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cellRole, cli, createLoopDevice, dmsetup, run } from './support/system';

const MiB = 1024 * 1024;
const CLI = join(process.cwd(), 'dist/dmsnap.js');
const primary = cellRole === 'primary';
const CYCLES = primary ? 10 : 5;
// The secondary cells run the per-step kills through the feeding test (the same kills, with
// the copy-on-write checked), and random kills here.
const everyStep = primary ? it.each : it.skip.each;

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** Writes and syncs a file on the origin; fails if that takes more than a second. */
function writableWithinASecond(dir: string, name: string): Buffer {
  const content = randomBytes(8192);
  const started = Date.now();
  const result = spawnSync('dd', [`of=${join(dir, name)}`, 'bs=8192', 'count=1', 'conv=fsync', 'status=none'], { input: content, timeout: 1000 });
  if (result.status !== 0) throw new Error(`the origin did not take a write within 1 s (status ${result.status}, ${result.signal ?? ''}, ${Date.now() - started} ms)`);
  return content;
}

function ourDevices(name: string): string[] {
  return dmsetup('ls').split('\n').map((l) => l.split('\t')[0]).filter((n) => n === name || n.startsWith(`${name}-`)).sort();
}

describe('crash safety', () => {
  const name = `crash${process.pid}`;
  let dir: string;
  let cow: string;
  const files = new Map<string, string>();

  beforeAll(() => {
    const disk = createLoopDevice(64 * MiB);
    cow = createLoopDevice(16 * MiB);
    expect(cli(['prepare', disk, '--name', name]).status).toBe(0);
    run('mkfs.ext4', ['-q', `/dev/mapper/${name}`]);
    dir = mkdtempSync('/tmp/dmsnap-crash-');
    run('mount', [`/dev/mapper/${name}`, dir]);
    for (let i = 0; i < 8; i++) {
      const content = randomBytes(64 * 1024);
      writeFileSync(join(dir, `before${i}`), content);
      files.set(`before${i}`, sha(content));
    }
    run('sync', []);
  });

  afterAll(() => {
    run('umount', [dir]);
    cli(['recover']);
    cli(['drop', name]);
    run('e2fsck', ['-fn', `/dev/mapper/${name}`]);
    expect(cli(['release', name]).status).toBe(0);
  });

  function checkData(): void {
    for (const [file, sum] of files) expect(sha(readFileSync(join(dir, file)))).toBe(sum);
  }

  const seam = (step: string) => ({ ...process.env, DMSNAP_TEST_SEAMS: '1', DMSNAP_TEST_KILL_AFTER: step });

  everyStep(['validate', 'zero-cow', 'write-label', 'create-cow-device', 'create-snapshot-device', 'load-snapshot-table', 'load-origin-table', 'suspend-origin', 'resume-snapshot', 'resume-origin'])(
    'survives a SIGKILL right after snapshot step "%s"',
    (step) => {
      const result = spawnSync(process.execPath, [CLI, 'snapshot', name, '--cow', cow], { env: seam(step), encoding: 'utf8' });
      expect(result.signal).toBe('SIGKILL');
      const written = writableWithinASecond(dir, `after-${step}`);
      const recovered = JSON.parse(cli(['recover', '--json']).stdout).actions.filter((a: { device: string }) => a.device.startsWith(name));
      if (step === 'resume-origin') {
        // The snapshot was complete: recover keeps it, and it is valid.
        expect(recovered.map((a: { action: string }) => a.action)).toEqual(['kept']);
        expect(JSON.parse(cli(['status', name, '--json']).stdout).origins[0].snapshots[0].state).toBe('active');
      } else {
        expect(recovered.every((a: { action: string }) => a.action !== 'kept')).toBe(true);
        expect(ourDevices(name)).toEqual([name, `${name}-real`]);
        expect(dmsetup('table', name)).toBe(dmsetup('table', `${name}-real`));
      }
      expect(dmsetup('info', '-c', '--noheadings', '-o', 'attr', name).trim()).toMatch(/^L-/);
      checkData();
      expect(sha(readFileSync(join(dir, `after-${step}`)))).toBe(sha(written));
      // The next cycle works.
      expect(cli(['drop', name]).status).toBe(0);
      expect(cli(['snapshot', name, '--cow', cow]).status).toBe(0);
      expect(cli(['drop', name]).status).toBe(0);
    },
  );

  everyStep(['load-linear-table', 'suspend-origin', 'remove-snapshot', 'resume-origin'])('survives a SIGKILL right after drop step "%s"', (step) => {
    expect(cli(['snapshot', name, '--cow', cow]).status).toBe(0);
    const result = spawnSync(process.execPath, [CLI, 'drop', name], { env: seam(step), encoding: 'utf8' });
    expect(result.signal).toBe('SIGKILL');
    writableWithinASecond(dir, `drop-${step}`);
    cli(['recover']);
    expect(cli(['drop', name]).status).toBe(0);
    expect(ourDevices(name)).toEqual([name, `${name}-real`]);
    expect(dmsetup('table', name)).toBe(dmsetup('table', `${name}-real`));
    checkData();
  });

  it(`survives random SIGKILLs during ${CYCLES} rapid snapshot/drop cycles`, async () => {
    let kills = 0;
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      for (const args of [['snapshot', name, '--cow', cow, '-q'], ['drop', name, '-q']]) {
        const child = spawn(process.execPath, [CLI, ...args], { stdio: 'ignore' });
        const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
        if (Math.random() < 0.5) {
          const delay = Math.floor(Math.random() * 1500);
          setTimeout(() => child.kill('SIGKILL'), delay);
        }
        if ((await exited) === 'SIGKILL') {
          kills++;
          writableWithinASecond(dir, `random-${cycle}`);
          cli(['recover', '-q']);
        }
      }
    }
    cli(['recover', '-q']);
    cli(['drop', name, '-q']);
    expect(ourDevices(name)).toEqual([name, `${name}-real`]);
    checkData();
    console.log(`random kills: ${kills} in ${CYCLES} cycles`);
    expect(kills).toBeGreaterThan(CYCLES / 10);
  }, 1_800_000);
});
