/**
 * Bad input never changes state (fake kernel): each case gets its message and exit code,
 * and every device, table and suspended flag is the same afterwards. The cases where the
 * kernel or the system decides (a device in use, a filesystem's signature, a read-only or
 * mounted device, a missing target module, a non-root caller) run against a real kernel
 * in test/vm/bad-input.test.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFakeSystem, fakeNodeDirectory, type FakeSystem } from '../support/fake-binding';
import { runFakeCli } from '../support/fake-cli';

const MiB = 1024 * 1024;
let system: FakeSystem;
let nodes: ReturnType<typeof fakeNodeDirectory>;
let disk: string;
let cow: string;
const lockDir = mkdtempSync(join(tmpdir(), 'dmsnap-bad-locks-'));

function cli(argv: string[]) {
  return runFakeCli(system, argv, { devDir: nodes.devDir, udev: false, lockDir });
}

/** Every device with its tables and suspended flag. */
function state(): string {
  const text = (table?: { targets: readonly { type: string; params: string }[] }) => table?.targets.map((t) => `${t.type} ${t.params}`) ?? null;
  return JSON.stringify([...system.devices.values()].map((d) => [d.name, d.uuid, d.suspended, text(d.live), text(d.inactive)]));
}

beforeEach(async () => {
  system = createFakeSystem();
  nodes = fakeNodeDirectory(system);
  disk = system.addLoopDevice(32 * MiB);
  cow = system.addLoopDevice(8 * MiB);
  expect((await cli(['prepare', disk, '--name', 'md2'])).status).toBe(0);
  expect((await cli(['snapshot', 'md2', '--cow', cow, '--snapshot-name', 'md2-taken'])).status).toBe(0);
});
afterEach(() => nodes.remove());
afterAll(() => rmSync(lockDir, { recursive: true, force: true }));

type Case = [string, () => string[], number, RegExp];
const cases: Case[] = [
  ['prepare of a missing path', () => ['prepare', '/dev/dmsnap-nothing-here'], 1, /ENOENT/],
  ['prepare of a character device', () => ['prepare', '/dev/null', '--name', 'md9'], 1, /not a block device/],
  ['a name with a slash', () => ['prepare', disk, '--name', 'a/b'], 2, /without '\/'/],
  ['a name too long for NAME-real', () => ['prepare', disk, '--name', 'n'.repeat(125)], 2, /1 to 127 bytes/],
  ['a chunk size that is not a power of two', () => ['snapshot', 'md2', '--cow', cow, '--chunk-size', '24'], 2, /power of two/],
  ['a chunk size below 8 sectors', () => ['snapshot', 'md2', '--cow', cow, '--chunk-size', '2k'], 2, /power of two from 8/],
  ['a chunk size above 2^21 sectors', () => ['snapshot', 'md2', '--cow', cow, '--chunk-size', '2G'], 2, /power of two from 8 to 2097152/],
  ['a snapshot of an unprepared name', () => ['snapshot', 'md2-none', '--cow', cow], 1, /no origin named.*dmsnap prepare/],
  ['a duplicate snapshot name', () => ['snapshot', 'md2', '--cow', system.addLoopDevice(8 * MiB), '--snapshot-name', 'md2-taken'], 1, /already exists/],
  ['a drop of an unknown origin', () => ['drop', 'md2-none'], 1, /no origin named/],
  ['a drop of an unknown snapshot', () => ['drop', 'md2', '--snapshot-name', 'nope'], 1, /no snapshot named "nope"/],
  ['a release of an unknown origin', () => ['release', 'md2-none'], 1, /no origin named/],
  ['a release with snapshots', () => ['release', 'md2'], 1, /drop them first/],
  ['an unknown option', () => ['snapshot', 'md2', '--cow', cow, '--frobnicate'], 2, /unknown option --frobnicate/],
  ['a missing option value', () => ['snapshot', 'md2', '--cow'], 2, /--cow/],
  ['a stray argument', () => ['drop', 'md2', 'extra'], 2, /Usage: dmsnap drop/],
];

describe('bad input (fake kernel)', () => {
  it.each(cases)('refuses %s and changes nothing', async (_what, args, code, message) => {
    const argv = args();
    const before = state();
    const result = await cli(argv);
    expect({ status: result.status, stdout: result.stdout }).toEqual({ status: code, stdout: '' });
    expect(result.stderr).toMatch(message);
    expect(state()).toBe(before);
  });
});
