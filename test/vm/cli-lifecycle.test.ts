/**
 * The lifecycle commands driven as an administrator would: the compiled dmsnap CLI in
 * child processes, against a real kernel. Output formats and usage errors are proven
 * against the fake kernel in test/unit/cli-lifecycle.test.ts.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cli, createLoopDevice, dmsetup, run } from './support/system';

const MiB = 1024 * 1024;
const CLI = join(process.cwd(), 'dist/dmsnap.js');
let counter = 0;
const fresh = () => `c${process.pid}x${counter++}`;

function sha(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function dmsnapDevices(): string[] {
  return dmsetup('info', '-c', '--noheadings', '-o', 'name,uuid', '--separator', ' ')
    .split('\n')
    .filter((l) => l.includes(' DMSNAP-'))
    .map((l) => l.split(' ')[0])
    .sort();
}

afterEach(() => {
  // Whatever a failed test left: drop snapshots, release origins.
  const ls = JSON.parse(cli(['ls', '--json']).stdout || '{"origins":[]}');
  for (const origin of ls.origins) {
    for (const snap of origin.snapshots) spawnSync('umount', ['-l', snap.device]);
    cli(['drop', origin.name]);
    spawnSync('umount', ['-l', origin.device]);
    cli(['release', origin.name]);
  }
});

describe('prepare, snapshot, status, ls, drop, release', () => {
  it('runs the procedure with data on stdout only', () => {
    const disk = createLoopDevice(32 * MiB);
    const cow = createLoopDevice(8 * MiB);
    const name = fresh();
    const prepared = cli(['prepare', disk, '--name', name]);
    expect(prepared).toMatchObject({ status: 0, stdout: `/dev/mapper/${name}\n`, stderr: '' });

    const taken = cli(['snapshot', name, '--cow', cow, '--chunk-size', '16k']);
    expect(taken.status).toBe(0);
    expect(taken.stdout).toBe(`/dev/mapper/${name}-snap\n`);
    expect(taken.stderr).toMatch(new RegExp(`^dmsnap: ${name} was frozen for \\d+\\.\\d ms\\n$`));
    const status = JSON.parse(cli(['status', name, '--json']).stdout);
    expect(status).toEqual({
      origins: [
        {
          name,
          device: `/dev/mapper/${name}`,
          backing: disk,
          sizeBytes: 32 * MiB,
          suspended: false,
          merge: null,
          rollbackAtBoot: null,
          snapshots: [expect.objectContaining({ name: `${name}-snap`, persistent: true, chunkSectors: 32, state: 'active' })],
        },
      ],
    });
    const snap = status.origins[0].snapshots[0];
    expect(snap).toMatchObject({ cow, cowFile: null, trackingSince: null, device: `/dev/mapper/${name}-snap`, totalSectors: 16384 - 128 });
    expect(typeof snap.allocatedSectors).toBe('number');
    expect(typeof snap.usedPercent).toBe('number');

    expect(cli(['ls']).stdout.split('\n').filter((l) => l.startsWith(name))).toHaveLength(2);
    expect(cli(['drop', name]).status).toBe(0);
    expect(dmsetup('table', name)).toBe(dmsetup('table', `${name}-real`));
    expect(cli(['release', name]).status).toBe(0);
    expect(dmsnapDevices().filter((d) => d.startsWith(name))).toEqual([]);
  });

  it('exits 4 when busy: a held lock, a mounted snapshot, a mounted origin', () => {
    const disk = createLoopDevice(16 * MiB);
    const cow = createLoopDevice(4 * MiB);
    const name = fresh();
    cli(['prepare', disk, '--name', name]);
    // A held lock: exit 4 after the timeout.
    const lockDir = mkdtempSync('/tmp/dmsnap-locks-');
    const holder = spawn('flock', [join(lockDir, `${name}.lock`), 'sleep', '30'], { stdio: 'ignore', detached: true });
    try {
      for (let i = 0; i < 50 && !existsSync(join(lockDir, `${name}.lock`)); i++) spawnSync('sleep', ['0.1']);
      spawnSync('sleep', ['0.3']);
      const locked = cli(['snapshot', name, '--cow', cow], { env: { DMSNAP_LOCK_DIR: lockDir, DMSNAP_LOCK_TIMEOUT: '0.5' } });
      expect(locked.status).toBe(4);
      expect(locked.stderr).toMatch(/another dmsnap process is working on/);
    } finally {
      process.kill(-holder.pid!, 'SIGKILL');
    }

    // A mounted snapshot cannot be dropped: exit 4, and it stays.
    run('mkfs.ext4', ['-q', `/dev/mapper/${name}`]);
    cli(['snapshot', name, '--cow', cow]);
    const dir = mkdtempSync('/tmp/dmsnap-mnt-');
    run('mount', ['-o', 'ro,noload', `/dev/mapper/${name}-snap`, dir]);
    try {
      const busy = cli(['drop', name]);
      expect(busy.status).toBe(4);
      expect(busy.stderr).toMatch(/mounted or open.*unmount/);
      expect(dmsnapDevices()).toContain(`${name}-snap`);
    } finally {
      run('umount', [dir]);
    }
    // A mounted origin cannot be released.
    run('mount', [`/dev/mapper/${name}`, dir]);
    try {
      cli(['drop', name]);
      expect(cli(['release', name])).toMatchObject({ status: 4, stderr: expect.stringMatching(/unmount it before releasing/) });
    } finally {
      run('umount', [dir]);
    }
  });

  it('refuses to prepare a mounted device, naming what to do', () => {
    const disk = createLoopDevice(16 * MiB);
    run('mkfs.ext4', ['-q', disk]);
    const dir = mkdtempSync('/tmp/dmsnap-mnt-');
    run('mount', [disk, dir]);
    try {
      const result = cli(['prepare', disk, '--name', fresh()]);
      expect(result.status).toBe(4);
      expect(result.stderr).toMatch(new RegExp(`Unmount ${disk}, run prepare, then mount /dev/mapper/`));
    } finally {
      run('umount', [dir]);
    }
  });
});

/** An origin with an ext4 filesystem holding some files; returns its name and mount point. */
function originWithFiles(sizeBytes = 64 * MiB) {
  const disk = createLoopDevice(sizeBytes);
  const name = fresh();
  cli(['prepare', disk, '--name', name]);
  run('mkfs.ext4', ['-q', `/dev/mapper/${name}`]);
  const dir = mkdtempSync('/tmp/dmsnap-origin-');
  run('mount', [`/dev/mapper/${name}`, dir]);
  mkdirSync(join(dir, 'data'));
  const files = new Map<string, string>();
  for (let i = 0; i < 10; i++) {
    const content = randomBytes(32 * 1024);
    writeFileSync(join(dir, 'data', `f${i}`), content);
    files.set(`data/f${i}`, sha(content));
  }
  run('sync', []);
  return { name, dir, files, unmount: () => run('umount', [dir]) };
}

describe('backup', () => {
  it('runs COMMAND in the mounted snapshot, then unmounts and drops', () => {
    const origin = originWithFiles();
    const cow = createLoopDevice(16 * MiB);
    const out = mkdtempSync('/tmp/dmsnap-out-');
    try {
      const result = cli([
        'backup', origin.name, '--cow', cow, '--',
        'sh', '-c', `tar -cf ${out}/backup.tar data && env | grep -E '^DMSNAP_(DEVICE|MOUNT|ORIGIN)=' | sort > ${out}/env && pwd > ${out}/pwd`,
      ]);
      expect(result.status).toBe(0);
      expect(result.stdout).toBe('');
      const extracted = mkdtempSync('/tmp/dmsnap-x-');
      run('tar', ['-xf', join(out, 'backup.tar'), '-C', extracted]);
      for (const [path, sum] of origin.files) expect(sha(readFileSync(join(extracted, path)))).toBe(sum);
      const mountDir = readFileSync(join(out, 'pwd'), 'utf8').trim();
      expect(readFileSync(join(out, 'env'), 'utf8')).toBe(
        `DMSNAP_DEVICE=/dev/mapper/${origin.name}-snap\nDMSNAP_MOUNT=${mountDir}\nDMSNAP_ORIGIN=${origin.name}\n`,
      );
      expect(existsSync(mountDir)).toBe(false);
      expect(dmsnapDevices()).toEqual([origin.name, `${origin.name}-real`].sort());
      expect(cli(['backup', origin.name, '--cow', cow, '--', 'sh', '-c', 'exit 7']).status).toBe(7);
      expect(cli(['backup', origin.name, '--cow', cow, '--', 'no-such-program-x']).status).toBe(127);
      // A COMMAND that a signal ends: 128 + the signal's number, as a shell reports it.
      expect(cli(['backup', origin.name, '--cow', cow, '--', 'sh', '-c', 'kill -HUP $$']).status).toBe(129);
      expect(cli(['backup', origin.name, '--cow', cow, '--', 'sh', '-c', 'kill -SEGV $$']).status).toBe(139);
      expect(dmsnapDevices()).toEqual([origin.name, `${origin.name}-real`].sort());
    } finally {
      origin.unmount();
    }
  });

  it('tears everything down on SIGTERM', async () => {
    const origin = originWithFiles();
    const cow = createLoopDevice(16 * MiB);
    try {
      const child = spawn(process.execPath, [CLI, 'backup', origin.name, '--cow', cow, '--mount-dir', '/tmp/dmsnap-sigterm', '--', 'sleep', '60']);
      let err = '';
      child.stderr.on('data', (d) => (err += d));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      for (let i = 0; i < 300 && !err.includes('mounted read-only'); i++) await new Promise((r) => setTimeout(r, 100));
      expect(err).toMatch(/mounted read-only on \/tmp\/dmsnap-sigterm/);
      child.kill('SIGTERM');
      expect(await exited).toBe(143);
      expect(run('findmnt', ['-rn', '-o', 'TARGET']).split('\n')).not.toContain('/tmp/dmsnap-sigterm');
      expect(dmsnapDevices()).toEqual([origin.name, `${origin.name}-real`].sort());
    } finally {
      origin.unmount();
    }
  });

  it('stops COMMAND and exits 3 when the COW fills up; the origin keeps its data', async () => {
    const origin = originWithFiles(64 * MiB);
    const cow = createLoopDevice(1 * MiB);
    try {
      // COMMAND waits while 16 MiB are written to the origin: far more than the COW holds.
      const child = spawn(process.execPath, [CLI, 'backup', origin.name, '--cow', cow, '--chunk-size', '8', '--', 'sleep', '120']);
      let err = '';
      child.stderr.on('data', (d) => (err += d));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      for (let i = 0; i < 300 && !err.includes('mounted read-only'); i++) await new Promise((r) => setTimeout(r, 100));
      run('dd', ['if=/dev/urandom', `of=${join(origin.dir, 'big')}`, 'bs=1M', 'count=16', 'conv=fsync', 'status=none']);
      expect(await exited).toBe(3);
      expect(err).toMatch(/became invalid: its COW device \/dev\/loop\d+ \(960\.0 KiB, [\d.]+% used\)/);
      expect(dmsnapDevices()).toEqual([origin.name, `${origin.name}-real`].sort());
      for (const [path, sum] of origin.files) expect(sha(readFileSync(join(origin.dir, path)))).toBe(sum);
      expect(statSync(join(origin.dir, 'big')).size).toBe(16 * MiB);
    } finally {
      origin.unmount();
    }
    run('e2fsck', ['-fn', `/dev/mapper/${origin.name}`]);
  });
});

describe('backup usage limit', () => {
  it('stops COMMAND and exits 3 when the COW reaches --usage-limit', async () => {
    const origin = originWithFiles(64 * MiB);
    const cow = createLoopDevice(8 * MiB);
    try {
      const child = spawn(process.execPath, [CLI, 'backup', origin.name, '--cow', cow, '--usage-limit', '20', '--', 'sleep', '120']);
      let err = '';
      child.stderr.on('data', (d) => (err += d));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      for (let i = 0; i < 300 && !err.includes('mounted read-only'); i++) await new Promise((r) => setTimeout(r, 100));
      run('dd', ['if=/dev/urandom', `of=${join(origin.dir, 'some')}`, 'bs=1M', 'count=4', 'conv=fsync', 'status=none']);
      expect(await exited).toBe(3);
      expect(err).toMatch(/reached the usage limit of 20%: its COW device \/dev\/loop\d+ \(7\.9 MiB, [\d.]+% used\)/);
      expect(dmsnapDevices()).toEqual([origin.name, `${origin.name}-real`].sort());
    } finally {
      origin.unmount();
    }
  });
});

describe('image', () => {
  /** An origin without a filesystem: pattern A everywhere but a zero hole in the middle. */
  function rawOrigin(sizeBytes: number) {
    const disk = createLoopDevice(sizeBytes);
    const name = fresh();
    cli(['prepare', disk, '--name', name]);
    const data = Buffer.alloc(sizeBytes);
    randomBytes(sizeBytes / 2).copy(data, 0);
    writeFileSync(`/dev/mapper/${name}`, data);
    return { name, data };
  }

  it('copies the origin as it was at the snapshot, while it changes', async () => {
    const { name, data } = rawOrigin(16 * MiB);
    const cow = createLoopDevice(32 * MiB);
    const child = spawn(process.execPath, [CLI, 'image', name, '--cow', cow, '--output', '-']);
    const chunks: Buffer[] = [];
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    // Read slowly at first: the copy waits on the pipe while the origin is overwritten.
    child.stdout.pause();
    for (let i = 0; i < 300 && !err.includes('was frozen'); i++) await new Promise((r) => setTimeout(r, 50));
    writeFileSync(`/dev/mapper/${name}`, randomBytes(16 * MiB));
    run('sync', []);
    child.stdout.on('data', (d: Buffer) => chunks.push(d));
    child.stdout.resume();
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect({ code, err: err.replace(/dmsnap: .*\n/g, '') }).toEqual({ code: 0, err: '' });
    expect(sha(Buffer.concat(chunks))).toBe(sha(data));
    expect(dmsnapDevices().filter((d) => d.startsWith(name))).toEqual([name, `${name}-real`]);
  });

  it('writes a sparse file with holes and the same content', () => {
    const { name, data } = rawOrigin(16 * MiB);
    const cow = createLoopDevice(8 * MiB);
    const out = join(mkdtempSync('/tmp/dmsnap-img-'), 'image');
    const result = cli(['image', name, '--cow', cow, '--output', out, '--sparse']);
    expect(result.status).toBe(0);
    const stats = statSync(out);
    expect(stats.size).toBe(16 * MiB);
    expect(stats.blocks * 512).toBeLessThanOrEqual(8 * MiB + 64 * 1024);
    expect(sha(readFileSync(out))).toBe(sha(data));
    const dense = `${out}.dense`;
    expect(cli(['image', name, '--cow', cow, '--output', dense]).status).toBe(0);
    expect(statSync(dense).blocks * 512).toBeGreaterThanOrEqual(16 * MiB);
    rmSync(dense);
  });
});
