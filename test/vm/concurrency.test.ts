/**
 * Processes working on the same origin take turns (a lock per origin); different origins
 * proceed in parallel.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { cli, createLoopDevice, dmsetup } from './support/system';

const MiB = 1024 * 1024;
const CLI = join(process.cwd(), 'dist/dmsnap.js');

function runAsync(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise<{ status: number | null; stderr: string }>((resolve) => child.on('exit', (status) => resolve({ status, stderr })));
}

describe('concurrency', () => {
  const a = `cona${process.pid}`;
  const b = `conb${process.pid}`;

  beforeAll(() => {
    expect(cli(['prepare', createLoopDevice(16 * MiB), '--name', a]).status).toBe(0);
    expect(cli(['prepare', createLoopDevice(16 * MiB), '--name', b]).status).toBe(0);
  });

  afterAll(() => {
    for (const name of [a, b]) {
      cli(['drop', name]);
      cli(['release', name]);
    }
  });

  it('serialises two processes on one origin, and both succeed', async () => {
    const cows = [createLoopDevice(4 * MiB), createLoopDevice(4 * MiB)];
    const results = await Promise.all([
      runAsync(['snapshot', a, '--cow', cows[0], '--snapshot-name', `${a}-1`]),
      runAsync(['snapshot', a, '--cow', cows[1], '--snapshot-name', `${a}-2`]),
    ]);
    // stderr carries the freeze times; on a failure it says why.
    expect(results.map((r) => (r.status === 0 ? 0 : r.stderr))).toEqual([0, 0]);
    expect(dmsetup('status', `${a}-1`)).toMatch(/snapshot \d+\/8064 \d+/);
    expect(dmsetup('status', `${a}-2`)).toMatch(/snapshot \d+\/8064 \d+/);
    const drops = await Promise.all([runAsync(['drop', a, '--snapshot-name', `${a}-1`]), runAsync(['drop', a, '--snapshot-name', `${a}-2`])]);
    expect(drops).toEqual([{ status: 0, stderr: '' }, { status: 0, stderr: '' }]);
    expect(dmsetup('table', a)).toBe(dmsetup('table', `${a}-real`));
  });

  it('lets another origin proceed while one is locked', async () => {
    const lockDir = mkdtempSync('/tmp/dmsnap-locks-');
    const holder = spawn('flock', [join(lockDir, `${a}.lock`), 'sleep', '60'], { stdio: 'ignore', detached: true });
    try {
      for (let i = 0; i < 50 && !existsSync(join(lockDir, `${a}.lock`)); i++) spawnSync('sleep', ['0.1']);
      spawnSync('sleep', ['0.3']);
      const env = { DMSNAP_LOCK_DIR: lockDir, DMSNAP_LOCK_TIMEOUT: '20' };
      const locked = runAsync(['snapshot', a, '--cow', createLoopDevice(4 * MiB)], { ...env, DMSNAP_LOCK_TIMEOUT: '1' });
      const other = await runAsync(['snapshot', b, '--cow', createLoopDevice(4 * MiB)], env);
      expect(other.status).toBe(0);
      const blocked = await locked;
      expect(blocked.status).toBe(4);
      expect(blocked.stderr).toMatch(/another dmsnap process is working on/);
      expect(cli(['drop', b], { env }).status).toBe(0);
    } finally {
      process.kill(-holder.pid!, 'SIGKILL');
    }
  });
});
