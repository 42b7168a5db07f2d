/**
 * Runs in a worker thread for threads.test.ts: uses the addon from a second Node
 * environment (its own instance data) and reports back.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DeviceMapper } from '../../../lib';

async function main(): Promise<void> {
  const { name, mode } = workerData as { name: string; mode: 'cycle' | 'wait' };
  const dm = await DeviceMapper.open();
  if (mode === 'wait') {
    await dm.create(name, { table: '0 8 zero' });
    parentPort!.postMessage({ waiting: true });
    await dm.waitEvent(name); // never comes: the test terminates this worker
    return;
  }
  const results: number[] = [];
  for (let i = 0; i < 20; i++) {
    const created = await dm.create(`${name}-${i}`, { table: '0 8 zero' });
    results.push(created.minor);
    await dm.suspend(`${name}-${i}`);
    await dm.resume(`${name}-${i}`);
    await dm.remove(`${name}-${i}`);
  }
  const version = await dm.version();
  dm.close();
  parentPort!.postMessage({ done: results.length, driver: version.text });
}

main().catch((error: Error) => parentPort!.postMessage({ error: `${error.name}: ${error.message}` }));
