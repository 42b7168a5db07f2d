/**
 * The addon never blocks the event loop, event waits hold no thread-pool thread, and it
 * works from worker threads (per-environment state, cleaned up when a worker ends).
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { DeviceMapper, blockDeviceInfo } from '../../lib';
import { createLoopDevice, dmsetup } from './support/system';

const prefix = `dmsnap-th${process.pid}-`;

async function removeOurs(dm: DeviceMapper): Promise<void> {
  for (const d of (await dm.list()).filter((x) => x.name.startsWith(prefix))) await dm.remove(d.name);
}

function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} did not finish in ${ms} ms`)), ms))]);
}

describe('threads', () => {
  it('keeps the thread pool free while waiting for events', async () => {
    using dm = await DeviceMapper.open();
    const names = Array.from({ length: 6 }, (_, i) => `${prefix}w${i}`);
    for (const name of names) await dm.create(name, { table: '0 8 zero' });
    const controller = new AbortController();
    // More waits than libuv has pool threads (4 by default).
    const waits = names.map((name) => dm.waitEvent(name, undefined, { signal: controller.signal }).catch((e: Error) => e.name));
    await new Promise((r) => setTimeout(r, 200));
    const loop = createLoopDevice(1024 * 1024);
    const [version, info, list] = await withDeadline(Promise.all([dm.version(), blockDeviceInfo(loop), dm.list()]), 10_000, 'calls during waits');
    expect(version.major).toBe(4);
    expect(info.sizeBytes).toBe(1024 * 1024);
    expect(list.filter((d) => d.name.startsWith(prefix))).toHaveLength(6);
    // One event wakes exactly the waiter of that device.
    await dm.rename(names[0], `${prefix}renamed`);
    expect(await withDeadline(waits[0], 10_000, 'the woken wait')).toMatchObject({ name: `${prefix}renamed`, eventNr: 1 });
    controller.abort();
    expect(await Promise.all(waits.slice(1))).toEqual(Array(5).fill('AbortError'));
    await removeOurs(dm);
  });

  it('works from worker threads, in parallel with the main thread', async () => {
    const script = join(__dirname, 'support/worker-task.js');
    const run = (name: string, mode: 'cycle' | 'wait') => new Worker(script, { workerData: { name, mode } });
    const first = run(`${prefix}a`, 'cycle');
    const second = run(`${prefix}b`, 'cycle');
    const message = (worker: Worker) => new Promise<Record<string, unknown>>((resolve) => worker.once('message', resolve));
    using dm = await DeviceMapper.open();
    const [a, b] = await Promise.all([message(first), message(second), (async () => {
      for (let i = 0; i < 10; i++) await dm.version();
    })()]);
    expect(a).toEqual({ done: 20, driver: expect.stringMatching(/^4\./) });
    expect(b).toEqual({ done: 20, driver: expect.stringMatching(/^4\./) });

    // A worker torn down in the middle of an event wait: its poll thread is cancelled
    // and the process carries on.
    const waiter = run(`${prefix}c`, 'wait');
    expect(await message(waiter)).toEqual({ waiting: true });
    expect(await waiter.terminate()).toBe(1);
    expect((await dm.version()).major).toBe(4);
    expect(dmsetup('ls')).toContain(`${prefix}c`);
    await removeOurs(dm);
  });
});
