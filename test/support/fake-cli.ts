/**
 * Runs the dmsnap CLI in-process against a fake system: what it printed on stdout and
 * stderr and its exit code, as a child process would report them.
 */
import { PassThrough } from 'node:stream';
import { main } from '../../lib/cli/main';
import type { CliContext } from '../../lib/cli/command';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFakeSystem, fakeNodeDirectory, type FakeSystem } from './fake-binding';

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** `argv` run by main() on `system`'s binding; `input` is its stdin. */
export async function runFakeCli(system: FakeSystem, argv: string[], context: Partial<CliContext> = {}, input = ''): Promise<CliResult> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const stdin = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => (out += d));
  stderr.on('data', (d) => (err += d));
  stdin.end(input);
  const status = await main(argv, { ...context, stdout, stderr, stdin, binding: system.binding });
  return { status, stdout: out, stderr: err };
}

/** What fakeCliFixture gives a test file. */
export interface FakeCliFixture {
  /** The current test's fake system (a fresh one for each test). */
  readonly system: FakeSystem;
  /** Its /dev directory (nodes of the fake's devices). */
  readonly devDir: string;
  /** One lock directory for the whole file. */
  readonly lockDir: string;
  /** Runs the CLI on the current test's system. */
  cli(argv: string[]): Promise<CliResult>;
}

/**
 * Sets up, for the test file that calls it, a fresh fake system with its /dev directory
 * before each test (removed after it) and one lock directory (removed after the file).
 */
export function fakeCliFixture(lockPrefix: string): FakeCliFixture {
  let system: FakeSystem;
  let nodes: ReturnType<typeof fakeNodeDirectory>;
  const lockDir = mkdtempSync(join(tmpdir(), lockPrefix));
  beforeEach(() => {
    system = createFakeSystem();
    nodes = fakeNodeDirectory(system);
  });
  afterEach(() => nodes.remove());
  afterAll(() => rmSync(lockDir, { recursive: true, force: true }));
  return {
    get system() {
      return system;
    },
    get devDir() {
      return nodes.devDir;
    },
    lockDir,
    cli: (argv) => runFakeCli(system, argv, { devDir: nodes.devDir, udev: false, lockDir }),
  };
}
