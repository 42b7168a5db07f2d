/**
 * `dmsnap backup NAME...` and `dmsnap image NAME...` (a group snapshot) against the fake
 * kernel: the snapshots mounted at MOUNTDIR/NAME and COMMAND run once, one image per
 * origin, usage errors before anything is touched, and nothing left behind on failure.
 *
 * The fake kernel keeps its devices' data in memory, but backup and image read a snapshot
 * through its node with node:fs (detectFilesystem, copyDevice), and the fake's nodes are
 * links to nowhere. So node:fs/promises' open is bridged here: opening a node of the fake's
 * /dev directory opens a file that holds the device's data at that moment, read through
 * the fake; a snapshot reads as its origin did (nothing writes to the origins meanwhile).
 */
import { randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fakeCliFixture } from '../support/fake-cli';
import { DM_MAJOR, LOOP_MAJOR } from '../support/fake/constants';

jest.mock('node:fs/promises', () => {
  const actual = jest.requireActual('node:fs/promises');
  return { ...actual, open: (path: unknown, ...rest: unknown[]) => mockBridge.open(actual.open, path, rest) };
});

const MiB = 1024 * 1024;
const fx = fakeCliFixture('dmsnap-cli-group-backup-locks-');
const cli = fx.cli;

/** The node:fs/promises bridge (see the top): devices read through the fake, and reads made to fail. */
const mockBridge = {
  files: '',
  count: 0,
  /** The basename of a node whose open fails with EIO. */
  failing: undefined as string | undefined,
  async open(open: (...args: unknown[]) => Promise<unknown>, path: unknown, rest: unknown[]): Promise<unknown> {
    const link = typeof path === 'string' && path.startsWith(`${fx.devDir}/`) ? readlinkSync(path) : '';
    const node = /^\/dev\/fake-(\d+)-(\d+)$/.exec(link);
    if (!node) return open(path, ...rest);
    if (basename(path as string) === mockBridge.failing) {
      throw Object.assign(new Error(`EIO: i/o error, open '${path}'`), { code: 'EIO', errno: -5, syscall: 'open', path });
    }
    const file = join(mockBridge.files, `device-${++mockBridge.count}`);
    writeFileSync(file, await deviceData(Number(node[2])));
    return open(file, 'r');
  },
};

/** The data of the fake dm device with this minor: a snapshot's is its origin's. */
async function deviceData(minor: number): Promise<Buffer> {
  const device = [...fx.system.devices.values()].find((d) => d.minor === minor)!;
  const [target] = device.live!.targets;
  const source = target.type === 'snapshot' ? target.params.split(' ')[0] : `${DM_MAJOR}:${minor}`;
  const handle = await fx.system.binding.openBlockDevice(`/dev/block/${source}`, false, false);
  try {
    return await handle.read(0, target.length * 512);
  } finally {
    handle.close();
  }
}

/** A folder for images whose filesystem's device number cannot be one of the fake's. */
function imageParent(): string {
  for (const dir of ['/dev/shm', tmpdir()]) {
    const major = existsSync(dir) ? Number((BigInt(statSync(dir).dev) >> 8n) & 0xfffn) : DM_MAJOR;
    if (major !== DM_MAJOR && major !== LOOP_MAJOR) return dir;
  }
  throw new Error(`no folder for test images outside the device numbers of the fake kernel (majors ${DM_MAJOR} and ${LOOP_MAJOR})`);
}

function tables(): Record<string, string> {
  return Object.fromEntries([...fx.system.devices.values()].map((d) => [d.name, (d.live?.targets ?? []).map((t) => `${t.type} ${t.params}`).join('\n')]));
}

/** Prepared origins of 2 MiB, each holding random data behind an ext4 superblock; returns their COWs and data. */
async function origins(...names: string[]): Promise<{ cows: string[]; data: Buffer[] }> {
  const cows: string[] = [];
  const data: Buffer[] = [];
  for (const name of names) {
    const disk = fx.system.addLoopDevice(2 * MiB);
    expect((await cli(['prepare', disk, '--name', name])).status).toBe(0);
    const bytes = randomBytes(2 * MiB);
    bytes.fill(0, 0, 1024);
    bytes.writeUInt16LE(0xef53, 1024 + 56);
    bytes.writeUInt32LE(0x40, 1024 + 96);
    const handle = await fx.system.binding.openBlockDevice(disk, false, true);
    await handle.writeAt(0, bytes);
    handle.close();
    cows.push(fx.system.addLoopDevice(MiB));
    data.push(bytes);
  }
  return { cows, data };
}

let dir: string;
let log: string;
beforeAll(() => {
  mockBridge.files = mkdtempSync(join(tmpdir(), 'dmsnap-bridge-'));
});
afterAll(() => rmSync(mockBridge.files, { recursive: true, force: true }));
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'dmsnap-group-backup-'));
  log = join(dir, 'log');
  mockBridge.failing = undefined;
  // The fake's mounts, in the log COMMAND writes to.
  const { mount, unmount } = fx.system.binding;
  fx.system.binding.mount = async (source, target, ...rest) => {
    await mount(source, target, ...rest);
    appendFileSync(log, `mount ${basename(source)} ${target}\n`);
  };
  fx.system.binding.unmount = async (target, flags) => {
    await unmount(target, flags);
    appendFileSync(log, `unmount ${target}\n`);
  };
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const lines = () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : []);

describe('dmsnap backup with several origins (fake kernel)', () => {
  it('mounts each snapshot on MOUNTDIR/NAME, runs COMMAND once in MOUNTDIR, then unmounts and drops everything', async () => {
    const { cows } = await origins('ga', 'gb');
    const before = tables();
    const hook = `echo "pre-freeze $DMSNAP_ORIGINS" >> ${log}`;
    const command = `echo "run $PWD $DMSNAP_MOUNT [$DMSNAP_ORIGINS] [$DMSNAP_DEVICES] [\${DMSNAP_ORIGIN-unset}] $(stat -c %a ga gb | xargs)" >> ${log}`;
    const done = await cli(['backup', 'ga', 'gb', '--cow', cows[0], '--cow', cows[1], '--no-hooks', '--pre-freeze', hook, '--', 'sh', '-c', command]);
    expect(done).toMatchObject({ status: 0, stdout: '' });
    const mountDir = /mounted read-only on (\S+)\/ga\n/.exec(done.stderr)![1];
    expect(mountDir).toMatch(/^\/tmp\/dmsnap-backup-/);
    expect(done.stderr).toMatch(/^dmsnap: ga, gb were frozen for \d+\.\d ms\n/);
    expect(done.stderr).toContain(`dmsnap: ${fx.devDir}/gb-snap (ext4) mounted read-only on ${mountDir}/gb\n`);
    expect(lines()).toEqual([
      'pre-freeze ga gb',
      `mount ga-snap ${mountDir}/ga`,
      `mount gb-snap ${mountDir}/gb`,
      `run ${mountDir} ${mountDir} [ga gb] [${fx.devDir}/ga-snap ${fx.devDir}/gb-snap] [unset] 700 700`,
      `unmount ${mountDir}/ga`,
      `unmount ${mountDir}/gb`,
    ]);
    expect(existsSync(mountDir)).toBe(false);
    expect(fx.system.mounts.size).toBe(0);
    expect(tables()).toEqual(before);
  });

  it("passes COMMAND's exit status through, and removes the mount points it made in --mount-dir (not the directory)", async () => {
    const { cows } = await origins('ga', 'gb');
    const before = tables();
    const mountDir = join(dir, 'mnt');
    const failed = await cli(['backup', 'ga', 'gb', '--cow', cows[0], '--cow', cows[1], '--mount-dir', mountDir, '--', 'sh', '-c', `pwd >> ${log}; exit 7`]);
    expect(failed).toMatchObject({ status: 7, stdout: '' });
    expect(lines()).toEqual([`mount ga-snap ${mountDir}/ga`, `mount gb-snap ${mountDir}/gb`, mountDir, `unmount ${mountDir}/ga`, `unmount ${mountDir}/gb`]);
    expect(readdirSync(mountDir)).toEqual([]);
    expect(tables()).toEqual(before);
  });

  it('refuses a mount point that exists in --mount-dir, before the snapshot', async () => {
    const { cows } = await origins('ga', 'gb');
    const before = tables();
    const mountDir = join(dir, 'mnt');
    mkdirSync(join(mountDir, 'gb'), { recursive: true });
    const refused = await cli(['backup', 'ga', 'gb', '--cow', cows[0], '--cow', cows[1], '--mount-dir', mountDir, '--', 'sh', '-c', `echo ran >> ${log}`]);
    expect(refused).toMatchObject({ status: 1, stdout: '', stderr: expect.stringMatching(new RegExp(`${mountDir}/gb exists: dmsnap makes the mount points`)) });
    expect(lines()).toEqual([]);
    expect(readdirSync(mountDir)).toEqual(['gb']);
    expect(tables()).toEqual(before);
  });

  it('drops the snapshots unused, without running COMMAND, when a post-thaw hook fails', async () => {
    const { cows } = await origins('ga', 'gb');
    const before = tables();
    const failed = await cli(['backup', 'ga', 'gb', '--cow', cows[0], '--cow', cows[1], '--no-hooks', '--post-thaw', 'exit 4', '--', 'sh', '-c', `echo ran >> ${log}`]);
    expect(failed).toMatchObject({ status: 1, stdout: '', stderr: expect.stringMatching(/ga-snap, gb-snap taken, but/) });
    expect(lines()).toEqual([]);
    expect(tables()).toEqual(before);
  });

  it('keeps one origin as before: mounted on MOUNTDIR itself, with DMSNAP_ORIGIN and DMSNAP_DEVICE', async () => {
    const { cows } = await origins('ga');
    const before = tables();
    const mountDir = join(dir, 'mnt');
    const done = await cli(['backup', 'ga', '--cow', cows[0], '--mount-dir', mountDir, '--', 'sh', '-c', `echo "run $PWD $DMSNAP_ORIGIN $DMSNAP_DEVICE [\${DMSNAP_ORIGINS-unset}]" >> ${log}`]);
    expect(done).toMatchObject({ status: 0, stdout: '' });
    expect(done.stderr).toMatch(new RegExp(`^dmsnap: ga was frozen for \\d+\\.\\d ms\\ndmsnap: ${fx.devDir}/ga-snap \\(ext4\\) mounted read-only on ${mountDir}\\n$`));
    expect(lines()).toEqual([`mount ga-snap ${mountDir}`, `run ${mountDir} ga ${fx.devDir}/ga-snap [unset]`, `unmount ${mountDir}`]);
    expect(tables()).toEqual(before);
  });

  it('refuses with exit 2, before anything is touched, every group the options cannot pair', async () => {
    const { cows } = await origins('ua', 'ub');
    const [a, b] = cows;
    const before = tables();
    const mountDir = join(dir, 'mnt');
    mkdirSync(mountDir);
    const usage = async (args: string[], message: RegExp) => {
      const result = await cli(['backup', ...args, '--mount-dir', mountDir]);
      expect({ ...result, args }).toMatchObject({ status: 2, stdout: '', stderr: expect.stringMatching(message), args });
    };
    await usage(['ua', 'ub', '--cow', a, '--cow', b], /with several NAMEs, put "--" between the NAMEs and COMMAND/);
    expect(await cli(['backup', 'ua', 'ub', '--cow', a, '--cow', b, '--mount-dir', mountDir, '--'])).toMatchObject({ status: 2, stdout: '', stderr: expect.stringMatching(/missing COMMAND after "--"/) });
    await usage(['ua', '--cow', a, '--cow', b, '--', 'true'], /give one --cow per NAME, paired in order: 1 NAME\(s\), 2 --cow/);
    await usage(['ua', 'ub', '--cow', a, '--', 'true'], /give one --cow per NAME, paired in order: 2 NAME\(s\), 1 --cow/);
    await usage(['ua', 'ub', '--cow', a, '--cow-file', join(dir, 'f'), '--', 'true'], /not both/);
    await usage(['ua', 'ua', '--cow', a, '--cow', b, '--', 'true'], /each NAME once/);
    await usage(['ua', 'ub', '--cow', a, '--cow', a, '--', 'true'], /each --cow once/);
    await usage(['ua', 'ub', '--cow', a, '--cow', b, '--snapshot-name', 'x', '--', 'true'], /--snapshot-name once per NAME or not at all/);
    await usage(['ua', 'ub', '--cow', a, '--cow', b, '--chunk-size', '12k', '--', 'true'], /power of two/);
    await usage(['ua', 'ub', '--cow', a, '--cow', b, '--usage-limit', '0', '--', 'true'], /--usage-limit must be a percentage/);
    await usage(['ua', 'ub', '--cow', a, '--cow', b, '--min-free', '5', '--', 'true'], /--min-free watches a COW file/);
    await usage(['ua', 'ub', '--cow', a, '--cow', b, '--hook-timeout', 'banana', '--', 'true'], /--hook-timeout must be a number of seconds/);
    await usage(['ua', 'ub', '--cow', a, '--cow', b, '--hook-dir', 'relative', '--', 'true'], /--hook-dir needs an absolute path/);
    const many = Array.from({ length: 17 }, (_, i) => `o${i}`);
    await usage([...many, ...many.flatMap((_, i) => ['--cow', `/dev/c${i}`]), '--', 'true'], /unexpected argument "o16"/);
    expect(tables()).toEqual(before);
    expect(readdirSync(mountDir)).toEqual([]);
    expect(lines()).toEqual([]);
  });
});

describe('dmsnap image with several origins (fake kernel)', () => {
  let out: string;
  beforeEach(() => {
    out = mkdtempSync(join(imageParent(), 'dmsnap-group-images-'));
  });
  afterEach(() => rmSync(out, { recursive: true, force: true }));

  it('writes one image per origin, each equal to its origin, then drops the snapshots', async () => {
    const { cows, data } = await origins('ga', 'gb');
    const before = tables();
    const [imageA, imageB] = [join(out, 'a.img'), join(out, 'b.img')];
    writeFileSync(imageB, 'an older image');
    const done = await cli(['image', 'gb', 'ga', '--cow', cows[1], '--cow', cows[0], '--output', imageB, '--output', imageA, '--no-hooks', '--pre-freeze', `echo "$DMSNAP_ORIGINS" >> ${log}`]);
    expect(done).toMatchObject({ status: 0, stdout: '' });
    expect(done.stderr).toMatch(/^dmsnap: gb, ga were frozen for \d+\.\d ms\n/);
    expect(done.stderr).toContain(`dmsnap: copied 2.0 MiB of gb to ${imageB}\ndmsnap: copied 2.0 MiB of ga to ${imageA}\n`);
    expect(readFileSync(imageA).equals(data[0])).toBe(true);
    expect(readFileSync(imageB).equals(data[1])).toBe(true);
    expect(readdirSync(out).sort()).toEqual(['a.img', 'b.img']);
    expect(lines()).toEqual(['gb ga']);
    expect(tables()).toEqual(before);
  });

  it('leaves no snapshot and no image behind when the second image fails', async () => {
    const { cows } = await origins('ga', 'gb');
    const before = tables();
    mockBridge.failing = 'gb-snap';
    const failed = await cli(['image', 'ga', 'gb', '--cow', cows[0], '--cow', cows[1], '--output', join(out, 'a.img'), '--output', join(out, 'b.img')]);
    expect(failed).toMatchObject({ status: 1, stdout: '', stderr: expect.stringMatching(/EIO: i\/o error, open '.*\/gb-snap'/) });
    expect(failed.stderr).not.toMatch(/copied/);
    expect(readdirSync(out)).toEqual([]);
    expect(tables()).toEqual(before);
  });

  it('refuses with exit 2, before anything is touched, what a group cannot do', async () => {
    const { cows } = await origins('ia', 'ib');
    const [a, b] = cows;
    const before = tables();
    const [x, y] = [join(out, 'x.img'), join(out, 'y.img')];
    const usage = async (args: string[], message: RegExp) => {
      const result = await cli(['image', ...args]);
      expect({ ...result, args }).toMatchObject({ status: 2, stdout: '', stderr: expect.stringMatching(message), args });
    };
    const incremental = /incremental images of a group are not supported; image each origin on its own/;
    await usage(['ia', 'ib', '--cow', a, '--cow', b, '--output', x], /give one --output per NAME, paired in order: 2 NAME\(s\), 1 --output/);
    await usage(['ia', 'ib', '--cow', a, '--cow', b], /give one --output per NAME, paired in order: 2 NAME\(s\), 0 --output/);
    await usage(['ia', 'ib', '--cow', a, '--cow', b, '--output', '-', '--output', y], /--output - \(stdout\) cannot hold the images of several origins/);
    await usage(['ia', 'ib', '--cow', a, '--cow', b, '--output', x, '--output', join(out, '.', 'x.img')], /each --output once/);
    await usage(['ia', 'ib', '--cow', a, '--cow', b, '--output', x, '--output', y, '--track'], incremental);
    await usage(['ia', 'ib', '--cow', a, '--cow', b, '--update', x], incremental);
    await usage(['ia', 'ib', '--cow', a, '--cow', b, '--delta', '-'], incremental);
    await usage(['ia', 'ib', '--cow', a, '--output', x, '--output', y], /give one --cow per NAME, paired in order: 2 NAME\(s\), 1 --cow/);
    await usage(['ia', 'ib', '--cow-file', x, '--cow-file', join(out, 'c'), '--output', x, '--output', y], /--output and --cow-file name the same file/);
    await usage(['ia', 'ib', '--cow', a, '--cow', b, '--output', x, '--output', y, '--hook-timeout', '0'], /--hook-timeout must be/);
    await usage(['ia', '--cow', a, '--output', x, '--output', y], /give one --output per NAME, paired in order: 1 NAME\(s\), 2 --output/);
    await usage(['ia', '--cow', a, '--cow', b, '--output', x], /give one --cow per NAME, paired in order: 1 NAME\(s\), 2 --cow/);
    await usage(['ia', '--cow', a, '--output', x, '--chunk-size', '3furlongs'], /--chunk-size/);
    expect(tables()).toEqual(before);
    expect(readdirSync(out)).toEqual([]);
  });

  it('runs the hooks for one origin too, images it as before, and drops its snapshot after a post-thaw failure', async () => {
    const { cows, data } = await origins('ga');
    const before = tables();
    const image = join(out, 'ga.img');
    const done = await cli(['image', 'ga', '--cow', cows[0], '--output', image, '--no-hooks', '--pre-freeze', `echo "pre $DMSNAP_ORIGINS" >> ${log}`, '--post-thaw', `echo post >> ${log}`]);
    expect(done).toMatchObject({ status: 0, stdout: '' });
    expect(done.stderr).toMatch(new RegExp(`^dmsnap: ga was frozen for \\d+\\.\\d ms\\ndmsnap: copied 2\\.0 MiB of ga to ${image}\\n$`));
    expect(readFileSync(image).equals(data[0])).toBe(true);
    expect(lines()).toEqual(['pre ga', 'post']);
    expect(tables()).toEqual(before);
    // A post-thaw failure: the snapshot, taken, is dropped unused, and the image is not written.
    const again = join(out, 'again.img');
    const failed = await cli(['image', 'ga', '--cow', cows[0], '--output', again, '--no-hooks', '--post-thaw', 'exit 4']);
    expect(failed).toMatchObject({ status: 1, stdout: '', stderr: expect.stringMatching(/ga-snap taken, but/) });
    expect(readdirSync(out)).toEqual(['ga.img']);
    expect(tables()).toEqual(before);
  });
});
