// The VM suite: runs as root inside the VM test bed (scripts/vm), on the JavaScript
// that `npm run build:ts` compiled on the host (no TypeScript compiler in the guest,
// where JIT-heavy work is many times slower).
const kernel = process.env.DMSNAP_VM_KERNEL || '?';
const udev = process.env.DMSNAP_VM_UDEV === '1' ? 'udev' : 'no udev';

// The secondary cells (every kernel and udev flavour but 6.1 without udev, see
// scripts/test-vm.sh) run what depends on the kernel and udev; what tests dmsnap's own
// logic on any kernel (paths, CLI conventions, output files, concurrency, soak) runs in
// the primary cell only, so that the five cells fit in CI's time.
const primaryOnly = ['bad-input', 'cli-dm', 'cli-image', 'cli-lifecycle', 'concurrency', 'hostile-paths', 'incremental-faults', 'monitor', 'package', 'soak', 'threads'];
// The secondary cells with udev run what a running udev changes: device nodes and
// cookies, dmsetup reading dmsnap's devices, the ioctls and the lifecycle (udev probes
// every new device and may hold it open), loop devices and COW files, rollback (udev
// probes the origin and the merged snapshot's removal), the seed procedure. The crash,
// model, freeze and incremental files run in the kernel cells: they drive the same calls,
// only more often.
// dmsetup reading dmsnap's devices and the lifecycle suite (6.1), and the seed procedure
// (6.12), each run in one of the two: the same udev rules and the same calls on either
// kernel.
const udevCell = ['basics', 'cow-file', 'device-mapper', 'loop', 'native-contract', 'rollback', 'udev-cookies', ...(kernel === '6.1' ? ['dmsetup', 'lifecycle'] : ['seed-scenario'])];
const secondary = process.env.DMSNAP_VM_CELL_ROLE === 'secondary';
const withUdev = process.env.DMSNAP_VM_UDEV === '1';
// dmsetup reading dmsnap's devices (udev flags, cookies) runs in the primary cell and the
// cells with udev.
const withoutUdevOnly = withUdev ? [] : ['dmsetup'];
// DMSNAP_VM_PART splits the primary cell in two (scripts/test-vm.sh --matrix runs them as
// guests of their own): "kernel" runs what every kernel cell runs, "logic" the
// primary-only files; unset, one guest runs both.
const part = process.env.DMSNAP_VM_PART || undefined;
if (part !== undefined && part !== 'kernel' && part !== 'logic') throw new Error(`DMSNAP_VM_PART must be kernel or logic; got "${part}"`);
// DMSNAP_VM_BOOT=1 or 2: one boot of the tests across a reboot (test/vm/reboot/, which
// scripts/test-vm.sh runs over two boots with the same disks); without it they are left out.
const boot = process.env.DMSNAP_VM_BOOT || undefined;
// 6.12 without udev leaves out the seed procedure (its cell with udev runs it) and the
// incremental images (the exception store they read and the calls they make are the same
// on every kernel: 6.1 and 5.10's older interface run them).
const elsewhere = secondary && !withUdev && kernel === '6.12' ? ['seed-scenario', 'incremental'] : [];
const ignored = secondary ? [...primaryOnly, ...withoutUdevOnly, ...elsewhere] : part === 'kernel' ? primaryOnly : [];
const only = secondary && withUdev ? udevCell : !secondary && part === 'logic' ? primaryOnly : undefined;

/** @type {import('jest').Config} */
module.exports = {
  displayName: `vm ${kernel} ${udev}${part ? ` (${part})` : ''}${boot ? ` (boot ${boot})` : ''}`,
  rootDir: __dirname,
  testEnvironment: 'node',
  roots: ['<rootDir>/dist/test/vm'],
  testMatch: boot ? ['**/reboot/*.test.js'] : only ? only.map((name) => `**/${name}.test.js`) : ['**/*.test.js'],
  testPathIgnorePatterns: boot ? [] : [...ignored.map((name) => `/${name}\\.test\\.js$`), '/reboot/'],
  transform: {},
  watchman: false,
  cacheDirectory: '/tmp/jest-vm-cache',
  maxWorkers: 1,
  testTimeout: 300000,
  setupFilesAfterEnv: ['<rootDir>/dist/test/vm/support/leak-check.js'],
};
