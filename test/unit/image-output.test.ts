import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, constants, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DmsnapError, InvalidArgumentError } from '../../lib/errors';
import { copyDevice } from '../../lib/snapshot/image';
import { decodeDev, openImageOutput, outputKind, outputRefusal, type OutputGuard } from '../../lib/snapshot/image-output';
import { devKey } from '../../lib/system/stack';

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const none: OutputGuard = { devices: new Map(), filesystems: new Map(), nodeDir: '/dev/mapper' };
const noSize = async () => 0;
const fresh = () => mkdtempSync(join(tmpdir(), 'dmsnap-out-'));

describe('decodeDev', () => {
  it('splits glibc dev_t numbers, also minors above 255', () => {
    expect(decodeDev((8 << 8) | 3)).toEqual({ major: 8, minor: 3 });
    expect(decodeDev((253 << 8) | 5)).toEqual({ major: 253, minor: 5 });
    // 7:300 → minor's high bits go above the major's 12 bits.
    expect(decodeDev((7 << 8) | 44 | (256 << 12))).toEqual({ major: 7, minor: 300 });
    expect(decodeDev(BigInt(259) << 8n)).toEqual({ major: 259, minor: 0 });
  });
});

describe('outputKind and outputRefusal', () => {
  it('classifies, and refuses a directory with what to do', () => {
    const dir = fresh();
    expect(outputKind('/x', undefined)).toBe('new');
    writeFileSync(join(dir, 'f'), '');
    expect(outputKind(join(dir, 'f'), statSync(join(dir, 'f')))).toBe('file');
    expect(() => outputKind(dir, statSync(dir))).toThrow(expect.objectContaining({ code: 'EISDIR', message: expect.stringMatching(/is a directory; name a file in it/) }));
  });

  const guard: OutputGuard = {
    devices: new Map([['253:0', 'the origin /dev/mapper/md2'], ['8:17', 'the COW device given with --cow']]),
    filesystems: new Map([['253:0', 'the origin /dev/mapper/md2']]),
    nodeDir: '/dev/mapper',
  };
  it('refuses block devices of the guard by their number, not by their path', () => {
    expect(outputRefusal('/tmp/alias', 'block', { rdev: { major: 253, minor: 0 } }, guard)).toMatch(/^\/tmp\/alias is the origin \/dev\/mapper\/md2; refusing/);
    expect(outputRefusal('/dev/sdb1', 'block', { rdev: { major: 8, minor: 17 } }, guard)).toMatch(/the COW device/);
    expect(outputRefusal('/dev/sdc', 'block', { rdev: { major: 8, minor: 32 } }, guard)).toBeUndefined();
    // A character device 253:0 is not the block device 253:0.
    expect(outputRefusal('/tmp/c', 'char', { rdev: { major: 253, minor: 0 } }, guard)).toBeUndefined();
  });
  it('refuses a file on a filesystem that lives on the origin, saying why', () => {
    expect(outputRefusal('/srv/x.img', 'new', { dev: { major: 253, minor: 0 } }, guard)).toMatch(/filesystem on the origin .*copied\s+into the COW/);
    expect(outputRefusal('/srv/x.img', 'file', { dev: { major: 253, minor: 0 } }, guard)).toMatch(/refusing/);
    expect(outputRefusal('/backup/x.img', 'new', { dev: { major: 8, minor: 1 } }, guard)).toBeUndefined();
  });
  it('creates no file in /dev/mapper (where the snapshot appears), but takes a device there', () => {
    expect(outputRefusal('/dev/mapper/md2-snap', 'new', { dev: { major: 0, minor: 5 } }, guard)).toMatch(/holds device-mapper's nodes/);
    expect(outputRefusal('/dev/mapper/other', 'block', { rdev: { major: 253, minor: 9 } }, guard)).toBeUndefined();
  });
});

describe('openImageOutput', () => {
  it('writes a new file through a 0600 temporary file that appears only on commit', async () => {
    const dir = fresh();
    const path = join(dir, 'image');
    const out = await openImageOutput({ target: path, guard: none, sizeBytes: 4, deviceSize: noSize });
    expect(out.kind).toBe('new');
    expect(readdirSync(dir)).toEqual([out.temporary!.slice(dir.length + 1)]);
    expect(out.temporary).toMatch(/\/\.image\.dmsnap-[0-9a-f]{8}$/);
    expect(statSync(out.temporary!).mode & 0o777).toBe(0o600);
    await out.handle!.write(Buffer.from('data'), 0, 4, 0);
    await out.commit();
    expect(readdirSync(dir)).toEqual(['image']);
    expect(readFileSync(path, 'utf8')).toBe('data');
    await out.discard(); // after a commit: removes nothing
    expect(readFileSync(path, 'utf8')).toBe('data');
  });

  it('leaves an existing file as it was when discarded, and replaces it on commit', async () => {
    const dir = fresh();
    const path = join(dir, 'image');
    writeFileSync(path, 'previous');
    const failed = await openImageOutput({ target: path, guard: none, sizeBytes: 3, deviceSize: noSize });
    expect(failed.kind).toBe('file');
    await failed.handle!.write(Buffer.from('new'), 0, 3, 0);
    await failed.discard();
    expect(readdirSync(dir)).toEqual(['image']);
    expect(readFileSync(path, 'utf8')).toBe('previous');
    const good = await openImageOutput({ target: path, guard: none, sizeBytes: 3, deviceSize: noSize });
    await good.handle!.write(Buffer.from('new'), 0, 3, 0);
    await good.commit();
    expect(readFileSync(path, 'utf8')).toBe('new');
  });

  it('follows a symbolic link: the file it points to is replaced, the link stays', async () => {
    const dir = fresh();
    mkdirSync(join(dir, 'real'));
    writeFileSync(join(dir, 'real', 'image'), 'old');
    symlinkSync(join(dir, 'real', 'image'), join(dir, 'link'));
    const out = await openImageOutput({ target: join(dir, 'link'), guard: none, sizeBytes: 3, deviceSize: noSize });
    expect(out.path).toBe(join(dir, 'real', 'image'));
    await out.handle!.write(Buffer.from('new'), 0, 3, 0);
    await out.commit();
    expect(lstatSync(join(dir, 'link')).isSymbolicLink()).toBe(true);
    expect(readFileSync(join(dir, 'link'), 'utf8')).toBe('new');
  });

  it('fails on a missing folder or a directory, creating nothing', async () => {
    const dir = fresh();
    await expect(openImageOutput({ target: join(dir, 'no', 'x.img'), guard: none, sizeBytes: 1, deviceSize: noSize })).rejects.toThrow(
      expect.objectContaining({ code: 'ENOENT', message: expect.stringMatching(/its folder .*\/no does not exist.*create it first/) }),
    );
    await expect(openImageOutput({ target: dir, guard: none, sizeBytes: 1, deviceSize: noSize })).rejects.toThrow(expect.objectContaining({ code: 'EISDIR' }));
    expect(readdirSync(dir)).toEqual([]);
  });

  it('refuses a file on a guarded filesystem before creating anything', async () => {
    const dir = fresh();
    const dev = devKey(decodeDev(statSync(dir).dev));
    const guard: OutputGuard = { ...none, filesystems: new Map([[dev, 'the origin /dev/mapper/t']]) };
    const error = await openImageOutput({ target: join(dir, 'x.img'), guard, sizeBytes: 1, deviceSize: noSize }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DmsnapError);
    expect(error).toMatchObject({ code: 'ERR_DMSNAP_OUTPUT_IN_ORIGIN' });
    expect(readdirSync(dir)).toEqual([]);
  });

  it('writes an existing FIFO in order and never removes it; --sparse is refused there', async () => {
    const dir = fresh();
    const fifo = join(dir, 'fifo');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    await expect(openImageOutput({ target: fifo, guard: none, sizeBytes: 1, sparse: true, deviceSize: noSize })).rejects.toThrow(InvalidArgumentError);
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const out = await openImageOutput({ target: fifo, guard: none, sizeBytes: 1, deviceSize: noSize });
      expect(out.kind).toBe('fifo');
      expect(out.temporary).toBeUndefined();
      // A source file of 96 KiB: offsets would fail on a pipe (ESPIPE).
      const source = join(dir, 'source');
      const data = randomBytes(96 * 1024);
      writeFileSync(source, data);
      const copying = copyDevice(source, data.length, out.handle!);
      const chunks: Buffer[] = [];
      const buffer = Buffer.alloc(65536);
      for (let got = 0; got < data.length; ) {
        await new Promise((r) => setTimeout(r, 5));
        try {
          const n = readSync(reader, buffer, 0, buffer.length, null);
          chunks.push(Buffer.from(buffer.subarray(0, n)));
          got += n;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') throw error;
        }
      }
      expect(await copying).toBe(data.length);
      expect(sha(Buffer.concat(chunks))).toBe(sha(data));
      await out.discard();
      expect(statSync(fifo).isFIFO()).toBe(true);
    } finally {
      closeSync(reader);
    }
  });

  it('takes a sparse image into the temporary file, with holes and full length', async () => {
    const dir = fresh();
    const source = join(dir, 'source');
    const data = Buffer.alloc(1024 * 1024);
    randomBytes(64 * 1024).copy(data, 0);
    writeFileSync(source, data);
    const out = await openImageOutput({ target: join(dir, 'image'), guard: none, sizeBytes: data.length, sparse: true, deviceSize: noSize });
    expect(await copyDevice(source, data.length, out.handle!, { sparse: true })).toBe(data.length);
    await out.commit();
    expect(statSync(join(dir, 'image')).size).toBe(data.length);
    expect(sha(readFileSync(join(dir, 'image')))).toBe(sha(data));
    expect(statSync(join(dir, 'image')).blocks * 512).toBeLessThan(data.length);
  });

  it('refuses --sparse for stdout', async () => {
    await expect(openImageOutput({ target: { stream: process.stderr }, guard: none, sizeBytes: 1, sparse: true, deviceSize: noSize })).rejects.toThrow(/--sparse/);
  });
});
