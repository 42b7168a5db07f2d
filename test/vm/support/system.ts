/**
 * Helpers for tests that run as root inside the VM test bed: shell commands, loop
 * devices that clean up after themselves, and a picture of the kernel's device state
 * for leak checks.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';

export const inVm = process.env.DMSNAP_VM === '1';
export const withUdev = process.env.DMSNAP_VM_UDEV === '1';
/**
 * The cell of the VM matrix this run is (scripts/test-vm.sh sets DMSNAP_VM_CELL_ROLE):
 * the primary cell (kernel 6.1 without udev) runs the long crash and soak tests in full,
 * the secondary ones run shorter versions. Outside the matrix the same rule applies.
 */
export const cellRole: 'primary' | 'secondary' =
  process.env.DMSNAP_VM_CELL_ROLE === 'primary' || process.env.DMSNAP_VM_CELL_ROLE === 'secondary'
    ? process.env.DMSNAP_VM_CELL_ROLE
    : process.env.DMSNAP_VM_KERNEL === '6.1' && !withUdev
      ? 'primary'
      : 'secondary';

/** Runs a program and returns its stdout; throws with its stderr if it fails. */
export function run(program: string, args: string[], options: { input?: string } = {}): string {
  const result = spawnSync(program, args, { encoding: 'utf8', input: options.input });
  if (result.error) throw result.error;
  if (result.status !== 0) {
    throw new Error(`${program} ${args.join(' ')} exited ${result.status}: ${result.stderr.trim()}`);
  }
  return result.stdout;
}

let scratch: string | undefined;
/** A folder on the guest's tmpfs for backing files. */
export function scratchDir(): string {
  scratch ??= mkdtempSync('/tmp/dmsnap-test-');
  return scratch;
}

const loops: { path: string; file: string }[] = [];

/** Attaches a new loop device over a sparse file of the given size. */
export function createLoopDevice(sizeBytes: number, options: { sectorSize?: number } = {}): string {
  const file = join(scratchDir(), `loop-${loops.length}-${process.pid}.img`);
  writeFileSync(file, '');
  truncateSync(file, sizeBytes);
  const args = ['--find', '--show'];
  if (options.sectorSize) args.push('--sector-size', String(options.sectorSize));
  const path = run('losetup', [...args, file]).trim();
  // A loop device keeps a read-only flag (blockdev --setro) across detach and attach.
  run('blockdev', ['--setrw', path]);
  loops.push({ path, file });
  return path;
}

/**
 * Detaches every loop device this process created and removes their files. A loop device
 * something still holds open (udev probing it, say) is only marked to detach at its last
 * close: wait, up to 10 s, until the kernel has let each one go.
 */
export function detachLoopDevices(): void {
  const detached: string[] = [];
  while (loops.length > 0) {
    const { path, file } = loops.pop()!;
    spawnSync('losetup', ['--detach', path]);
    rmSync(file, { force: true });
    detached.push(path);
  }
  if (detached.length === 0) return;
  if (withUdev) spawnSync('udevadm', ['settle', '--timeout=10']);
  const attached = () => detached.filter((path) => existsSync(`/sys/block/${path.slice('/dev/'.length)}/loop/backing_file`));
  for (let waited = 0; attached().length > 0 && waited < 10_000; waited += 50) spawnSync('sleep', ['0.05']);
}

export interface DeviceState {
  dm: string[];
  loops: string[];
  mounts: string[];
}

/** The device-mapper devices, attached loop devices and block-device mounts that exist now. */
export function deviceState(): DeviceState {
  const block = readdirSync('/sys/block');
  const dm = block
    .filter((name) => name.startsWith('dm-'))
    .map((name) => readFileSync(`/sys/block/${name}/dm/name`, 'utf8').trim())
    .sort();
  const loopsNow = block
    .filter((name) => name.startsWith('loop') && existsSync(`/sys/block/${name}/loop/backing_file`))
    .map((name) => `${name}=${readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').trim()}`)
    .sort();
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' - ')[1]?.split(' ')[1])
    .filter((source): source is string => !!source && /^\/dev\/(mapper\/|dm-|loop|md)/.test(source))
    .sort();
  return { dm, loops: loopsNow, mounts };
}

/** Runs a snippet of JavaScript as an unprivileged user (nobody) and returns its stdout. */
export function runAsNobody(script: string): string {
  return execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script], {
    encoding: 'utf8',
    cwd: process.cwd(),
  });
}

/** Runs the dmsnap CLI (the compiled one, as users run it) and collects its output. */
export function cli(args: string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}) {
  const result = spawnSync(process.execPath, [join(process.cwd(), 'dist/dmsnap.js'), ...args], {
    encoding: 'utf8',
    input: options.input ?? '',
    env: { ...process.env, ...options.env },
  });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Runs dmsetup, failing the test if it fails. Without udev, nodes need `dmsetup mknodes`. */
export function dmsetup(...args: string[]): string {
  return run('dmsetup', args);
}

/** Every device-mapper device with its live table and suspended flag, as dmsetup sees them. */
export function dmsetupState(): string {
  const names = run('dmsetup', ['ls'])
    .split('\n')
    .filter((l) => l && l !== 'No devices found')
    .map((l) => l.split('\t')[0]);
  return names
    .map((name) => `${name}\n${run('dmsetup', ['table', name])}${run('dmsetup', ['info', '-c', '--noheadings', '-o', 'name,attr', name])}`)
    .join('');
}

/** The image holds byte for byte what the device does (cmp: cheaper than two hashes under emulation, and as strict). */
export function expectSameContent(image: string, device: string): void {
  const compared = spawnSync('cmp', [image, device], { encoding: 'utf8' });
  expect(compared.stdout + compared.stderr).toBe('');
  expect(compared.status).toBe(0);
}
