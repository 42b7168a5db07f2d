/**
 * Loop devices dmsnap attaches itself (System.loop), written once and run against the
 * fake kernel (unit) and the real one (VM): attach of a sparse file and what the kernel
 * reports of it, autoclear, growing, detach, and the files it refuses.
 */
import { DeviceMapper, InvalidArgumentError } from '../../lib';
import { System } from '../../lib/system/system';
import type { AttachedLoop, Loops } from '../../lib/system/loop';
import { removeTestDevices } from './cleanup';

export interface LoopEnvironment {
  openClient(): Promise<DeviceMapper>;
  /** A sparse regular file of the given size, in a directory of the test's. */
  makeFile(sizeBytes: number): Promise<string>;
  /** A symbolic link to `target`. */
  makeSymlink(target: string): Promise<string>;
  makeDirectory(): Promise<string>;
  /** A path in the test's directory where nothing is. */
  missingPath(): string;
  /** Extends the file to sizeBytes (sparse). */
  growFile(path: string, sizeBytes: number): Promise<void>;
  /** The file's filesystem device number and inode, as stat(2) gives them. */
  fileIdentity(path: string): { major: number; minor: number; inode: number };
}

const MiB = 1024 * 1024;

/** Waits until `check` passes (the real kernel may detach on a workqueue, udev may hold a new device a moment). */
export async function eventually(check: () => Promise<void>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

export function loopSuite(env: LoopEnvironment): void {
  describe('loop devices dmsnap attaches (System.loop)', () => {
    const prefix = `dmsnap-loop${process.pid}-`;
    let dm: DeviceMapper;
    let loops: Loops;
    let attached: AttachedLoop[];
    let counter = 0;
    const tag = () => `DMSNAP-test${process.pid}-${counter++}-cow`;

    async function attach(file: string, options: { tag?: string; directIo?: boolean } = {}): Promise<AttachedLoop> {
      const loop = await loops.attach(file, { tag: options.tag ?? tag(), ...(options.directIo === undefined ? {} : { directIo: options.directIo }) });
      attached.push(loop);
      return loop;
    }

    const gone = (device: string) => eventually(() => expect(loops.status(device)).rejects.toMatchObject({ code: 'ENXIO' }));

    /** A linear dm device over the whole loop: a table holding it. */
    async function holdByTable(loop: AttachedLoop): Promise<string> {
      const name = `${prefix}${counter++}`;
      const sectors = (await loops.status(loop.device)).sizeBytes / 512;
      await dm.create(name, { table: `0 ${sectors} linear ${loop.major}:${loop.minor} 0` });
      return name;
    }

    beforeEach(async () => {
      dm = await env.openClient();
      loops = System.of(dm).loop;
      attached = [];
    });

    afterEach(async () => {
      await removeTestDevices({
        list: async () => (await dm.list()).map((d) => d.name).filter((name) => name.startsWith(prefix)),
        settle: async () => undefined,
        remove: async (name) => void (await dm.remove(name, { retry: false })),
      });
      for (const loop of attached) loop.release();
      for (const loop of attached) await gone(loop.device);
      dm.close();
    });

    describe('attach', () => {
      it('attaches a sparse file to a free loop device, tagged, autoclear, and reports it as the kernel does', async () => {
        const file = await env.makeFile(6 * MiB);
        const name = tag();
        const loop = await attach(file, { tag: name });
        expect(loop.device).toBe(`/dev/loop${loop.number}`);
        expect({ major: loop.major, minor: loop.minor }).toEqual({ major: 7, minor: loop.number });
        const status = await loops.status(loop.device);
        expect(status).toEqual({
          device: loop.device,
          number: loop.number,
          sizeBytes: 6 * MiB,
          autoclear: true,
          directIo: loop.directIo,
          readOnly: false,
          backing: env.fileIdentity(file),
          offsetBytes: 0,
          sizeLimitBytes: 0,
          tag: name,
        });
        expect((await System.of(dm).blockDevice(loop.device)).sizeBytes).toBe(6 * MiB);
      });

      it('gives each attach a loop device of its own', async () => {
        const [a, b] = [await attach(await env.makeFile(MiB)), await attach(await env.makeFile(2 * MiB))];
        expect(a.number).not.toBe(b.number);
        expect((await loops.status(a.device)).sizeBytes).toBe(MiB);
        expect((await loops.status(b.device)).sizeBytes).toBe(2 * MiB);
      });

      it('attaches without direct I/O when asked to', async () => {
        const loop = await attach(await env.makeFile(MiB), { directIo: false });
        expect(loop.directIo).toBe(false);
        expect((await loops.status(loop.device)).directIo).toBe(false);
      });

      it('keeps a tag of the full 63 bytes lo_file_name holds', async () => {
        const long = `DMSNAP-${'x'.repeat(52)}-cow`;
        expect(long).toHaveLength(63);
        const loop = await attach(await env.makeFile(MiB), { tag: long });
        expect((await loops.status(loop.device)).tag).toBe(long);
      });
    });

    describe('autoclear', () => {
      it('detaches a loop once its attach lets go and nothing else holds it', async () => {
        const loop = await attach(await env.makeFile(MiB));
        loop.release();
        await gone(loop.device);
      });

      it('keeps a loop a table holds after the attach lets go, and detaches it once the table is gone', async () => {
        const loop = await attach(await env.makeFile(2 * MiB));
        const name = await holdByTable(loop);
        loop.release();
        await new Promise((resolve) => setTimeout(resolve, 200));
        expect((await loops.status(loop.device)).sizeBytes).toBe(2 * MiB);
        await dm.remove(name);
        await gone(loop.device);
      });
    });

    describe('grow', () => {
      it('follows the file once it grew: the same size until LOOP_SET_CAPACITY, the new one after', async () => {
        const file = await env.makeFile(4 * MiB);
        const loop = await attach(file);
        await env.growFile(file, 12 * MiB);
        expect((await loops.status(loop.device)).sizeBytes).toBe(4 * MiB);
        await expect(loops.grow(loop.device)).resolves.toBe(12 * MiB);
        expect((await loops.status(loop.device)).sizeBytes).toBe(12 * MiB);
        expect((await System.of(dm).blockDevice(loop.device)).sizeBytes).toBe(12 * MiB);
      });
    });

    describe('detach', () => {
      it('while the attach holds it: still attached, gone at the release', async () => {
        const loop = await attach(await env.makeFile(MiB));
        await loops.detach(loop.device);
        expect((await loops.status(loop.device)).autoclear).toBe(true);
        loop.release();
        await gone(loop.device);
        await expect(loops.detach(loop.device)).rejects.toMatchObject({ code: 'ENXIO', message: expect.stringContaining(`nothing is attached to ${loop.device}`) });
      });

      it('while a table holds it: still attached, gone with the table', async () => {
        const loop = await attach(await env.makeFile(MiB));
        const name = await holdByTable(loop);
        loop.release();
        await loops.detach(loop.device);
        expect((await loops.status(loop.device)).sizeBytes).toBe(MiB);
        await dm.remove(name);
        await gone(loop.device);
      });
    });

    describe('errors', () => {
      it('refuses a missing file, a symlink (ELOOP: never followed) and a directory', async () => {
        const missing = env.missingPath();
        await expect(loops.attach(missing, { tag: tag() })).rejects.toMatchObject({ code: 'ENOENT', syscall: 'open', path: missing });
        const link = await env.makeSymlink(await env.makeFile(MiB));
        await expect(loops.attach(link, { tag: tag() })).rejects.toMatchObject({
          code: 'ELOOP',
          syscall: 'open',
          path: link,
          message: expect.stringContaining('is a symbolic link: name the file itself'),
        });
        const dir = await env.makeDirectory();
        await expect(loops.attach(dir, { tag: tag() })).rejects.toMatchObject({ code: 'EISDIR', syscall: 'open', path: dir });
      });

      it('checks its arguments before any call: tag, device path', async () => {
        const file = await env.makeFile(MiB);
        for (const bad of ['', 'x'.repeat(64), 'with space', 'nul\0', 'é']) {
          await expect(loops.attach(file, { tag: bad })).rejects.toBeInstanceOf(InvalidArgumentError);
        }
        await expect(loops.attach(file, { tag: 'ok', directIo: 'yes' as unknown as boolean })).rejects.toBeInstanceOf(InvalidArgumentError);
        for (const device of ['/dev/sda', '/dev/loop-control', '/dev/loop01', 'loop0']) {
          await expect(loops.status(device)).rejects.toBeInstanceOf(InvalidArgumentError);
          await expect(loops.grow(device)).rejects.toBeInstanceOf(InvalidArgumentError);
          await expect(loops.detach(device)).rejects.toBeInstanceOf(InvalidArgumentError);
        }
      });

      it('reports a loop device that does not exist (ENOENT on its open)', async () => {
        await expect(loops.status('/dev/loop9999999')).rejects.toMatchObject({ code: 'ENOENT', syscall: 'open' });
      });
    });
  });
}
