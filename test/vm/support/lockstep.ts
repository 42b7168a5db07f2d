/**
 * A writer across two filesystems, in lockstep, as a database with its WAL apart would
 * write: record n appended (and synced) to the first log, then record n to the second.
 * At any instant the second log holds as many records as the first, or one fewer; a pair
 * of copies taken at one instant must show the same. Run as a separate process:
 *   lockstep FIRST SECOND
 * It stops on SIGTERM and prints how many pairs it wrote.
 */
import { fdatasyncSync, openSync, writeSync } from 'node:fs';
import { record } from './writer';

if (require.main === module) {
  const first = openSync(process.argv[2], 'a');
  const second = openSync(process.argv[3], 'a');
  let seq = 0;
  let running = true;
  process.on('SIGTERM', () => (running = false));
  const tick = () => {
    for (let i = 0; i < 4 && running; i++) {
      writeSync(first, record(seq));
      fdatasyncSync(first);
      writeSync(second, record(seq));
      fdatasyncSync(second);
      seq++;
    }
    if (running) setImmediate(tick);
    else process.stdout.write(`${seq}\n`);
  };
  tick();
}
