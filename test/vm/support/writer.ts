/**
 * A background writer for the seed scenario: appends 4 KiB records, each synced, to a
 * log file on the origin, as a database would. Run as a separate process (argv: file).
 * A record is "SEQ <10 digits>\n" followed by a fill byte derived from the sequence
 * number, so a copy of the file can be checked for torn or missing records.
 */
import { closeSync, fdatasyncSync, openSync, writeSync } from 'node:fs';

export const RECORD_BYTES = 4096;

export function record(seq: number): Buffer {
  const buffer = Buffer.alloc(RECORD_BYTES, 0x41 + (seq % 26));
  buffer.write(`SEQ ${String(seq).padStart(10, '0')}\n`, 0, 'latin1');
  return buffer;
}

/** Checks a copy of the log: whole records, numbered 0, 1, 2, … Returns how many. */
export function checkLog(content: Buffer): number {
  if (content.length % RECORD_BYTES !== 0) throw new Error(`log length ${content.length} is not a whole number of records`);
  const count = content.length / RECORD_BYTES;
  for (let seq = 0; seq < count; seq++) {
    if (!content.subarray(seq * RECORD_BYTES, (seq + 1) * RECORD_BYTES).equals(record(seq))) {
      throw new Error(`record ${seq} of ${count} is torn or out of order`);
    }
  }
  return count;
}

if (require.main === module) {
  const fd = openSync(process.argv[2], 'a');
  let seq = 0;
  let running = true;
  process.on('SIGTERM', () => (running = false));
  const tick = () => {
    for (let i = 0; i < 8 && running; i++) {
      writeSync(fd, record(seq++));
      fdatasyncSync(fd);
    }
    if (running) setImmediate(tick);
    else {
      closeSync(fd);
      process.stdout.write(`${seq}\n`);
    }
  };
  tick();
}
