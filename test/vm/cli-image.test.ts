/**
 * `dmsnap image --output`: the output never costs data and never leaks the snapshot. A bad
 * or refused output is reported before anything is written; a failed image removes only
 * what dmsnap created; a previous image survives a failing new one.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cli, createLoopDevice, dmsetup, dmsetupState, run } from './support/system';

const MiB = 1024 * 1024;
const CLI = join(process.cwd(), 'dist/dmsnap.js');
let counter = 0;
const fresh = () => `i${process.pid}x${counter++}`;

function sha(data: Buffer | string): string {
  return createHash('sha256').update(typeof data === 'string' ? readFileSync(data) : data).digest('hex');
}

function dmsnapDevices(prefix: string): string[] {
  return dmsetup('info', '-c', '--noheadings', '-o', 'name,uuid', '--separator', ' ')
    .split('\n')
    .filter((l) => l.includes(' DMSNAP-') && l.startsWith(prefix))
    .map((l) => l.split(' ')[0])
    .sort();
}

/** A prepared origin holding random data, with the loop device under it. */
function rawOrigin(sizeBytes: number) {
  const disk = createLoopDevice(sizeBytes);
  const name = fresh();
  expect(cli(['prepare', disk, '--name', name]).status).toBe(0);
  const data = randomBytes(sizeBytes);
  writeFileSync(`/dev/mapper/${name}`, data);
  return { name, disk, data };
}

/** A COW full of random bytes (no signature, so dmsnap accepts it): any write to it shows. */
function randomCow(sizeBytes: number): string {
  const cow = createLoopDevice(sizeBytes);
  writeFileSync(cow, randomBytes(sizeBytes));
  return cow;
}

afterEach(() => {
  const ls = JSON.parse(cli(['ls', '--json']).stdout || '{"origins":[]}');
  for (const origin of ls.origins) {
    if (!origin.name.startsWith(`i${process.pid}x`)) continue;
    cli(['drop', origin.name]);
    cli(['release', origin.name]);
  }
});

/**
 * Runs `image` to `output` and invalidates the snapshot during the copy: the child is
 * stopped as soon as the snapshot is taken, the origin is overwritten (far more than the
 * 1 MiB COW holds), then the child continues. Resolves its exit code and stderr.
 */
async function imageWithFullCow(name: string, output: string): Promise<{ code: number | null; err: string }> {
  const cow = createLoopDevice(1 * MiB);
  const child = spawn(process.execPath, [CLI, 'image', name, '--cow', cow, '--chunk-size', '8', '--output', output]);
  let err = '';
  let stopped = false;
  child.stderr.on('data', (d) => {
    err += d;
    if (!stopped && err.includes('was frozen')) {
      stopped = true;
      child.kill('SIGSTOP');
    }
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  for (let i = 0; i < 600 && !err.includes('was frozen'); i++) await new Promise((r) => setTimeout(r, 50));
  expect(err).toMatch(/was frozen/);
  writeFileSync(`/dev/mapper/${name}`, randomBytes(8 * MiB));
  run('sync', []);
  child.kill('SIGCONT');
  return { code: await exited, err };
}

describe('image output', () => {
  it('a bad output path or a directory fails before the snapshot; nothing is left and the next image works', () => {
    const { name, data } = rawOrigin(8 * MiB);
    const cow = randomCow(4 * MiB);
    const cowSum = sha(cow);
    const before = dmsetupState();
    const bad = cli(['image', name, '--cow', cow, '--output', '/nonexistent/dir/x.img']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/\/nonexistent\/dir/);
    expect(dmsnapDevices(name)).toEqual([name, `${name}-real`]);
    expect(dmsetupState()).toBe(before);
    expect(sha(cow)).toBe(cowSum);
    // An existing directory is refused before the snapshot too, and left as it was.
    const dir = mkdtempSync('/tmp/dmsnap-img-');
    writeFileSync(join(dir, 'keep'), 'kept');
    expect(cli(['image', name, '--cow', cow, '--output', dir])).toMatchObject({ status: 1, stderr: expect.stringMatching(/is a directory/) });
    expect(dmsetupState()).toBe(before);
    expect(sha(cow)).toBe(cowSum);
    expect(readdirSync(dir)).toEqual(['keep']);
    const good = cli(['image', name, '--cow', cow, '--output', join(dir, 'x.img')]);
    expect(good).toMatchObject({ status: 0, stdout: '' });
    expect(sha(join(dir, 'x.img'))).toBe(sha(data));
    expect(dmsnapDevices(name)).toEqual([name, `${name}-real`]);
  });

  it('a failed image into a device node it did not create leaves the node', async () => {
    const { name } = rawOrigin(32 * MiB);
    const dir = mkdtempSync('/tmp/dmsnap-img-');
    const nullNode = join(dir, 'null');
    run('mknod', [nullNode, 'c', '1', '3']);
    const { code, err } = await imageWithFullCow(name, nullNode);
    expect({ code, invalid: /became invalid/.test(err) }).toEqual({ code: 3, invalid: true });
    expect(statSync(nullNode).isCharacterDevice()).toBe(true);
    expect(statSync(nullNode).rdev).toBe(statSync('/dev/null').rdev);

    // A block device (a node for a spare loop device): written in place, kept on failure.
    const spare = createLoopDevice(32 * MiB);
    const rdev = statSync(spare).rdev;
    const blockNode = join(dir, 'block');
    run('mknod', [blockNode, 'b', String(Math.floor(rdev / 256)), String(rdev % 256)]);
    const second = await imageWithFullCow(name, blockNode);
    expect(second.code).toBe(3);
    expect(statSync(blockNode).isBlockDevice()).toBe(true);
    expect(dmsnapDevices(name)).toEqual([name, `${name}-real`]);
  });

  it('an existing FIFO is written as a stream and kept on failure', async () => {
    const { name } = rawOrigin(32 * MiB);
    const dir = mkdtempSync('/tmp/dmsnap-img-');
    const fifo = join(dir, 'out');
    run('mkfifo', [fifo]);
    const reader = spawn('sh', ['-c', `cat ${fifo} > /dev/null`]);
    const { code, err } = await imageWithFullCow(name, fifo);
    reader.kill();
    expect({ code, invalid: /became invalid/.test(err) }).toEqual({ code: 3, invalid: true });
    expect(statSync(fifo).isFIFO()).toBe(true);
  });

  it('a previous image stays intact when a new one fails; a good one replaces it', async () => {
    const { name, data } = rawOrigin(32 * MiB);
    const dir = mkdtempSync('/tmp/dmsnap-img-');
    const out = join(dir, 'image');
    expect(cli(['image', name, '--cow', createLoopDevice(8 * MiB), '--output', out]).status).toBe(0);
    const first = sha(out);
    expect(first).toBe(sha(data));

    const { code } = await imageWithFullCow(name, out);
    expect(code).toBe(3);
    expect(sha(out)).toBe(first);
    expect(readdirSync(dir)).toEqual(['image']);
    expect(statSync(out).mode & 0o777).toBe(0o600);

    const now = readFileSync(`/dev/mapper/${name}`);
    expect(cli(['image', name, '--cow', createLoopDevice(8 * MiB), '--output', out, '--sparse']).status).toBe(0);
    expect(sha(out)).toBe(sha(now));
    expect(readdirSync(dir)).toEqual(['image']);
    expect(dmsnapDevices(name)).toEqual([name, `${name}-real`]);
  });

  // Every device of the stack is refused by its number (test/unit/image-output.test.ts);
  // here one of each kind: a dm device of the stack, the loop device under it, a node
  // that appears only with the snapshot.
  describe('refuses an output in the origin, changing nothing', () => {
    type Case = [string, (o: { name: string; disk: string; cow: string }) => string];
    const cases: Case[] = [
      ['the origin', ({ name }) => `/dev/mapper/${name}`],
      ['the backing loop device', ({ disk }) => disk],
      ['the snapshot', ({ name }) => `/dev/mapper/${name}-snap`],
    ];
    it.each(cases)('%s', (_what, output) => {
      const origin = rawOrigin(8 * MiB);
      const cow = randomCow(4 * MiB);
      const target = output({ ...origin, cow });
      const targetSum = existsSync(target) ? sha(target) : 'absent';
      const originSum = sha(`/dev/mapper/${origin.name}`);
      const cowSum = sha(cow);
      const before = dmsetupState();
      const result = cli(['image', origin.name, '--cow', cow, '--output', target]);
      expect({ status: result.status, stderr: result.stderr }).toEqual({
        status: 1,
        stderr: expect.stringMatching(/refus|device stack|\/dev\/mapper/),
      });
      expect(dmsetupState()).toBe(before);
      expect(existsSync(target) ? sha(target) : 'absent').toBe(targetSum);
      expect(sha(`/dev/mapper/${origin.name}`)).toBe(originSum);
      expect(sha(cow)).toBe(cowSum);
    });

    it('a file on the filesystem mounted on the origin', () => {
      const disk = createLoopDevice(32 * MiB);
      const name = fresh();
      cli(['prepare', disk, '--name', name]);
      run('mkfs.ext4', ['-q', `/dev/mapper/${name}`]);
      const mnt = mkdtempSync('/tmp/dmsnap-origin-');
      run('mount', [`/dev/mapper/${name}`, mnt]);
      try {
        mkdirSync(join(mnt, 'images'));
        const cow = randomCow(4 * MiB);
        const cowSum = sha(cow);
        const before = dmsetupState();
        const result = cli(['image', name, '--cow', cow, '--output', join(mnt, 'images', 'self.img')]);
        expect(result.status).toBe(1);
        expect(result.stderr).toMatch(/filesystem on the origin/);
        expect(dmsetupState()).toBe(before);
        expect(readdirSync(join(mnt, 'images'))).toEqual([]);
        expect(sha(cow)).toBe(cowSum);
      } finally {
        run('umount', [mnt]);
      }
    });
  });
});
