/**
 * The system under test for the model-based test: one dmsnap origin (a raw loop device, no
 * filesystem, so that its content changes only when the test writes), COW devices behind
 * test-owned device-mapper wrappers that can be switched to fail every write, and the
 * checks that must hold after every command.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { DeviceMapper, openOrigin } from '../../../lib';
import { invariantViolations } from './invariants';
import { cli, createLoopDevice, run, scratchDir } from './system';

const MiB = 1024 * 1024;
const CLI = join(process.cwd(), 'dist/dmsnap.js');

/** The steps a seam can kill the process after, for each command. */
export const SNAPSHOT_STEPS = ['validate', 'zero-cow', 'write-label', 'create-cow-device', 'create-snapshot-device', 'load-snapshot-table', 'load-origin-table', 'suspend-origin', 'resume-snapshot', 'resume-origin'];
export const DROP_STEPS = ['remove-snapshot', 'load-linear-table', 'suspend-origin', 'resume-origin'];
export const ROLLBACK_STEPS = ['load-merge-table', 'suspend-snapshot', 'start-merge', 'resume-merged-snapshot', 'load-final-table', 'swap-final-table', 'remove-merged-snapshot'];

/** The content of a device, read with O_DIRECT (a page cache would hide a change under it). */
export function deviceSha(path: string): string {
  const out = run('bash', ['-c', `set -o pipefail; dd if=${path} bs=1M iflag=direct status=none | sha256sum`]);
  return out.split(' ')[0];
}

export interface CliResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/** Runs the CLI; with `killAfter`, the test seam SIGKILLs it right after that step. */
export function runCli(args: string[], killAfter?: string): Promise<CliResult> {
  const env = { ...process.env, ...(killAfter ? { DMSNAP_TEST_SEAMS: '1', DMSNAP_TEST_KILL_AFTER: killAfter } : {}) };
  const child = spawn(process.execPath, [CLI, ...args, '-q'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('exit', (status, signal) => resolve({ status, signal, stderr })));
}

/** The real system: the origin, its COWs, and what the test knows it froze. */
export class ModelSystem {
  readonly origin: string;
  readonly cows: string[] = [];
  /** The origin's checksum at each live snapshot's freeze, by snapshot name. */
  readonly manifest = new Map<string, string>();
  /** A process was killed and no recover has run since: the invariants may be broken. */
  crashed = false;
  readonly log: string[] = [];
  private counter = 0;

  constructor(readonly name: string, cowCount: number) {
    const disk = createLoopDevice(8 * MiB);
    expect(cli(['prepare', disk, '--name', name]).status).toBe(0);
    this.origin = `/dev/mapper/${name}`;
    run('dd', ['if=/dev/urandom', `of=${this.origin}`, 'bs=1M', 'count=8', 'oflag=direct', 'status=none']);
    for (let i = 0; i < cowCount; i++) {
      const loop = createLoopDevice(4 * MiB);
      const cowName = `${name}-testcow${i}`;
      run('dmsetup', ['create', cowName, '--table', `0 8192 linear ${loop} 0`]);
      spawnSync('dmsetup', ['mknodes', cowName]);
      this.cows.push(`/dev/mapper/${cowName}`);
    }
  }

  nextSnapshotName(): string {
    return `${this.name}-m${this.counter++}`;
  }

  /** Makes a COW fail every write (or work again), as a failing disk would. */
  setCowFailing(index: number, failing: boolean): void {
    const cowName = `${this.name}-testcow${index}`;
    const loop = run('dmsetup', ['deps', '-o', 'devname', cowName]).match(/\((loop\d+)\)/)![1];
    const table = failing ? `0 8192 flakey /dev/${loop} 0 0 1 1 error_writes` : `0 8192 linear /dev/${loop} 0`;
    run('dmsetup', ['load', cowName, '--table', table]);
    run('dmsetup', ['suspend', '--noflush', cowName]);
    run('dmsetup', ['resume', cowName]);
  }

  /** Writes random data through the origin at a random place. */
  writeOrigin(offsetMiB: number, lengthKiB: number): void {
    const file = join(scratchDir(), 'model-write');
    run('dd', ['if=/dev/urandom', `of=${file}`, `bs=${lengthKiB * 1024}`, 'count=1', 'status=none']);
    const started = Date.now();
    const result = spawnSync('dd', [`if=${file}`, `of=${this.origin}`, `bs=${lengthKiB * 1024}`, `seek=${offsetMiB * 1024}`, 'oflag=direct,seek_bytes', 'conv=notrunc', 'status=none'], { timeout: 5000 });
    rmSync(file, { force: true });
    if (result.status !== 0) throw new Error(`the origin did not take a write (status ${result.status}, ${result.signal ?? ''}, ${Date.now() - started} ms)`);
  }

  /**
   * The snapshots of the origin that exist now, with their state, as dmsnap's status
   * reports them (the library in this process: the same code as `dmsnap status`, without a
   * process start per look).
   */
  async snapshotStates(): Promise<{ name: string; device: string; state: string }[]> {
    const dm = await DeviceMapper.open();
    try {
      return (await (await openOrigin(this.name, { dm })).status()).snapshots;
    } finally {
      dm.close();
    }
  }

  /** Forgets snapshots that are gone; a new one (kept by a killed command) froze `frozenSha`. */
  async sync(frozenSha: string): Promise<void> {
    const names = new Set((await this.snapshotStates()).map((s) => s.name));
    for (const known of [...this.manifest.keys()]) if (!names.has(known)) this.manifest.delete(known);
    for (const name of names) if (!this.manifest.has(name)) this.manifest.set(name, frozenSha);
  }

  /** What must hold after every command. */
  async check(what: string): Promise<void> {
    this.log.push(what);
    // Live at once, or within a second after a crash (the guardian resumes it).
    for (let waited = 0; ; waited += 50) {
      const attr = run('dmsetup', ['info', '-c', '--noheadings', '-o', 'attr', this.name]).trim();
      if (attr[2] !== 's') break;
      if (waited >= 1000) throw new Error(`after "${what}": ${this.name} is still suspended (${attr}) after 1 s`);
      spawnSync('sleep', ['0.05']);
    }
    if (!this.crashed) {
      const broken = invariantViolations();
      if (broken.length > 0) throw new Error(`after "${what}": invariants broken: ${broken.join('; ')}`);
    }
    for (const snap of await this.snapshotStates()) {
      if (snap.state !== 'active') continue;
      const expected = this.manifest.get(snap.name);
      const actual = deviceSha(snap.device);
      if (expected !== actual) throw new Error(`after "${what}": snapshot ${snap.name} is reported active but no longer reads as at its freeze`);
    }
    this.reportProgress();
  }

  /**
   * Every 100 commands, a line in the VM share's model-progress file (the host sees it
   * while jest still holds the test's output): a long run shows how far it got.
   */
  private reportProgress(): void {
    const share = process.env.DMSNAP_VM_SHARE;
    if (!share || this.log.length % 100 !== 0) return;
    appendFileSync(join(share, 'model-progress'), `${new Date().toISOString()} ${this.name}: ${this.log.length} commands passed\n`);
  }

  /** Leaves nothing behind. */
  tearDown(): void {
    cli(['recover', '-q']);
    cli(['drop', this.name, '-q']);
    for (let i = 0; i < this.cows.length; i++) spawnSync('dmsetup', ['remove', `${this.name}-testcow${i}`]);
    expect(cli(['release', this.name]).status).toBe(0);
  }
}

/** A random 64-bit seed, for a run that was not given one. */
export function freshSeed(): number {
  return randomBytes(4).readUInt32LE(0) | 0;
}
