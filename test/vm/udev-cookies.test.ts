/**
 * Under udev, every RESUME, REMOVE and RENAME carries a udev cookie: a SysV semaphore
 * that counts the uevents udev still has to process. When the ioctl fails the kernel
 * sends no uevent, so nothing else will ever remove that semaphore: dmsnap must. These
 * tests count the cookie semaphores (keys 0x0d4dXXXX, as libdevmapper and dmsetup name
 * them) before and after ioctls that fail, alone and inside a batch.
 */
import { closeSync, openSync, readFileSync } from 'node:fs';
import { DeviceMapper, DmError } from '../../lib';
import { withUdev } from './support/system';

const prefix = `dmsnap-u${process.pid}-`;
const COOKIE_MAGIC = 0x0d4d;

/** The udev cookie semaphores that exist now, as "key=value" strings. */
function cookieSemaphores(): string[] {
  const [, ...rows] = readFileSync('/proc/sysvipc/sem', 'utf8').trim().split('\n');
  return rows
    .map((row) => row.trim().split(/\s+/))
    .map(([key, semid]) => ({ key: Number(key) >>> 0, semid }))
    .filter(({ key }) => key >>> 16 === COOKIE_MAGIC)
    .map(({ key, semid }) => `0x${key.toString(16).padStart(8, '0')} (semid ${semid})`)
    .sort();
}

async function failure(promise: Promise<unknown>): Promise<DmError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(error instanceof DmError)) throw new Error(`expected a DmError, got ${String(error)}`);
  return error;
}

const describeUdev = withUdev ? describe : describe.skip;

describeUdev('udev cookies of failed ioctls', () => {
  let dm: DeviceMapper;
  let before: string[];

  beforeAll(async () => {
    dm = await DeviceMapper.open();
    expect(dm.udev).toBe(true);
  });

  beforeEach(() => {
    before = cookieSemaphores();
  });

  afterEach(async () => {
    for (const d of (await dm.list()).filter((x) => x.name.startsWith(prefix))) {
      if ((await dm.info(d.name)).suspended && (await dm.info(d.name)).liveTable) await dm.resume(d.name);
      await dm.remove(d.name).catch(() => undefined);
    }
  });

  afterAll(() => dm.close());

  it('a resume of a device that does not exist (ENXIO) leaves no semaphore', async () => {
    const error = await failure(dm.resume(`${prefix}nosuch`));
    expect(error.code).toBe('ENXIO');
    expect(cookieSemaphores()).toEqual(before);
  });

  it('a resume of a suspended device without a table (EINVAL) leaves no semaphore', async () => {
    const name = `${prefix}empty`;
    await dm.create(name);
    await dm.suspend(name);
    const error = await failure(dm.resume(name));
    expect(error.code).toBe('EINVAL');
    expect(cookieSemaphores()).toEqual(before);
  });

  it('a remove of an open device (EBUSY) leaves no semaphore, with or without retries', async () => {
    const name = `${prefix}open`;
    await dm.create(name, { table: '0 8 zero' });
    before = cookieSemaphores();
    const fd = openSync(`/dev/mapper/${name}`, 'r');
    try {
      expect((await failure(dm.remove(name, { retry: false }))).code).toBe('EBUSY');
      expect(cookieSemaphores()).toEqual(before);
      // About 5 s of retries, each one an ioctl with its own cookie.
      expect((await failure(dm.remove(name))).code).toBe('EBUSY');
      expect(cookieSemaphores()).toEqual(before);
    } finally {
      closeSync(fd);
    }
    expect((await dm.info(name)).liveTable).toBe(true);
  });

  it('a rename to a name in use (EBUSY) leaves no semaphore', async () => {
    const a = `${prefix}a`;
    const b = `${prefix}b`;
    await dm.create(a, { table: '0 8 zero' });
    await dm.create(b, { table: '0 8 zero' });
    before = cookieSemaphores();
    const error = await failure(dm.rename(a, b));
    expect(error.code).toBe('EBUSY');
    expect(cookieSemaphores()).toEqual(before);
    expect((await dm.info(a)).name).toBe(a);
  });

  it('a failed member of a batch undoes only its own count: the batch still waits for the others, then is gone', async () => {
    const name = `${prefix}batch`;
    await dm.create(name);
    await dm.load(name, '0 8 zero');
    const batch = dm.udevBatch();
    await dm.resume(name, { batch });
    expect((await failure(dm.resume(`${prefix}nosuch`, { batch }))).code).toBe('ENXIO');
    // The batch's cookie exists until finish(), which must still see udev's answer for the
    // successful resume (true), not time out on a count the failed call left behind.
    expect(cookieSemaphores()).toHaveLength(before.length + 1);
    expect(await batch.finish()).toBe(true);
    expect(cookieSemaphores()).toEqual(before);
  });
});

