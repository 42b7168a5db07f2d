/**
 * A writer across two filesystems, in lockstep, as a database with its WAL apart would
 * write: record n written (and synced) to the first log, then record n to the second. At
 * any instant the second log holds as many records as the first, or one fewer; a pair of
 * copies taken at one instant must show the same. Run as a separate process:
 *   lockstep FIRST SECOND SLOTS
 * Each log is a ring of SLOTS records (record n in slot n mod SLOTS, see writer.ts), filled
 * once before it prints "ready": its blocks never move afterwards, so a copy can be read
 * from the block device at the extents the filesystem gave it. It stops on SIGTERM and
 * prints how many records it wrote.
 */
import { fdatasyncSync, openSync, writeSync } from 'node:fs';
import { record, RECORD_BYTES } from './writer';

if (require.main === module) {
  const logs = [openSync(process.argv[2], 'w'), openSync(process.argv[3], 'w')];
  const slots = Number(process.argv[4]);
  let seq = 0;
  const write = () => {
    for (const fd of logs) {
      writeSync(fd, record(seq), 0, RECORD_BYTES, (seq % slots) * RECORD_BYTES);
      fdatasyncSync(fd);
    }
    seq++;
  };
  while (seq < slots) write();
  process.stdout.write('ready\n');
  let running = true;
  process.on('SIGTERM', () => (running = false));
  const tick = () => {
    for (let i = 0; i < 4 && running; i++) write();
    if (running) setImmediate(tick);
    else process.stdout.write(`${seq}\n`);
  };
  tick();
}
