/**
 * Runs the dmsnap CLI in-process against a fake system: what it printed on stdout and
 * stderr and its exit code, as a child process would report them.
 */
import { PassThrough } from 'node:stream';
import { main } from '../../lib/cli/main';
import type { CliContext } from '../../lib/cli/command';
import type { FakeSystem } from './fake-binding';

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
