/**
 * The npm package as a user gets it, on a real kernel: the tarball that `npm run
 * build:prebuilds` packed into dist/package/ is unpacked into a project of its own in the
 * guest (no network here: its one run-time dependency, `bindings`, is linked from the
 * checkout's node_modules, as npm would have installed it) and takes a real snapshot of a
 * loop device through the installed package's library and through its CLI, with the
 * prebuilt addon and guardian (the package has no build/ and no test/: it is no checkout,
 * so it honours no DMSNAP_ADDON). Primary cell only (jest.vm.config.js).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, existsSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cli, createLoopDevice, run } from './support/system';

const MiB = 1024 * 1024;
const packageDir = join(process.cwd(), 'dist/package');
const tarball = existsSync(packageDir) ? readdirSync(packageDir).find((name) => /^dmsnap-.*\.tgz$/.test(name)) : undefined;
const target = `${process.platform}-${process.arch}`;

/** Takes a snapshot with the installed library, checks it holds the old data while the origin is written, drops it. */
const LIBRARY_SCRIPT = `
const { closeSync, fsyncSync, openSync, readFileSync, readSync, writeSync } = require('node:fs');
const { prepare, openOrigin } = require('dmsnap');
const [disk, cow, name] = process.argv.slice(2);
const head = (path) => {
  const fd = openSync(path, 'r');
  const buffer = Buffer.alloc(65536);
  readSync(fd, buffer, 0, buffer.length, 0);
  closeSync(fd);
  return buffer;
};
(async () => {
  await prepare(disk, { name });
  const origin = await openOrigin(name);
  const before = head(origin.devicePath);
  const snap = await origin.snapshot({ cow });
  const fd = openSync(origin.devicePath, 'r+');
  writeSync(fd, Buffer.alloc(65536, 0x5a), 0, 65536, 0);
  fsyncSync(fd);
  closeSync(fd);
  const status = await snap.status();
  const kept = head(snap.devicePath).equals(before);
  const changed = head(origin.devicePath).every((byte) => byte === 0x5a);
  const addon = readFileSync('/proc/self/maps', 'utf8').split('\\n').map((l) => l.split(/\\s+/)[5]).find((p) => p && p.endsWith('/dmsnap.node'));
  await snap.drop();
  await origin.release();
  console.log(JSON.stringify({ state: status.state, kept, changed, addon }));
  process.exit(0);
})().catch((e) => { console.error(e.code, e.message); process.exit(1); });
`;

(tarball ? describe : describe.skip)(`the packed package, installed in the guest${tarball ? '' : ' [skipped: no dist/package/dmsnap-*.tgz: run npm run build:prebuilds on the host]'}`, () => {
  let project: string;
  let installed: string;
  const node = (args: string[]) => spawnSync(process.execPath, args, { cwd: project, encoding: 'utf8', timeout: 120_000 });

  beforeAll(() => {
    project = mkdtempSync('/tmp/dmsnap-package-');
    installed = join(project, 'node_modules', 'dmsnap');
    mkdirSync(installed, { recursive: true });
    run('tar', ['-xzf', join(packageDir, tarball!), '-C', installed, '--strip-components=1']);
    symlinkSync(join(process.cwd(), 'node_modules', 'bindings'), join(project, 'node_modules', 'bindings'));
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'uses-dmsnap', version: '1.0.0', private: true }));
    writeFileSync(join(project, 'snapshot.js'), LIBRARY_SCRIPT);
  });

  afterAll(() => {
    if (project) rmSync(project, { recursive: true, force: true });
  });

  it('is a package, not a checkout: prebuilt binaries, no build, no test suite', () => {
    expect(existsSync(join(installed, 'prebuilds', target, 'dmsnap.node'))).toBe(true);
    expect(existsSync(join(installed, 'prebuilds', target, 'dmsnap-guardian'))).toBe(true);
    expect(existsSync(join(installed, 'build'))).toBe(false);
    expect(existsSync(join(installed, 'test'))).toBe(false);
    expect(JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')).name).toBe('dmsnap');
  });

  it('takes, checks and drops a real snapshot through the library, with the prebuilt addon', () => {
    const disk = createLoopDevice(32 * MiB);
    const cow = createLoopDevice(8 * MiB);
    run('dd', [`of=${disk}`, 'if=/dev/urandom', 'bs=64k', 'count=1', 'oflag=direct', 'status=none']);
    const result = node(['snapshot.js', disk, cow, `pkg${process.pid}`]);
    expect({ status: result.status, stderr: result.stderr }).toEqual({ status: 0, stderr: '' });
    expect(JSON.parse(result.stdout)).toEqual({
      state: 'active',
      kept: true,
      changed: true,
      addon: join(installed, 'prebuilds', target, 'dmsnap.node'),
    });
    expect(cli(['ls', '--json']).stdout).not.toContain(`pkg${process.pid}`);
  });

  it('takes and drops a real snapshot through the installed CLI', () => {
    const disk = createLoopDevice(32 * MiB);
    const cow = createLoopDevice(8 * MiB);
    const name = `pkgcli${process.pid}`;
    const dmsnap = (args: string[]) => node([join(installed, 'dist/dmsnap.js'), ...args]);
    expect(node([join(installed, 'dist/dmsnap.js'), '--version']).stdout.trim()).toBe(JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')).version);
    expect(dmsnap(['prepare', disk, '--name', name])).toMatchObject({ status: 0, stdout: `/dev/mapper/${name}\n` });
    try {
      expect(dmsnap(['snapshot', name, '--cow', cow])).toMatchObject({ status: 0, stdout: `/dev/mapper/${name}-snap\n` });
      const status = JSON.parse(dmsnap(['status', name, '--json']).stdout) as { origins: { snapshots: { state: string }[] }[] };
      expect(status.origins[0]!.snapshots.map((s) => s.state)).toEqual(['active']);
      expect(dmsnap(['drop', name])).toMatchObject({ status: 0 });
    } finally {
      dmsnap(['drop', name]);
      expect(dmsnap(['release', name])).toMatchObject({ status: 0 });
    }
  });
});
