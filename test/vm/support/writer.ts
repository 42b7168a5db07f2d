/**
 * A background writer for the VM tests: writes 4 KiB records, each synced, to a log file
 * on the origin, as a database would. Run as a separate process:
 *   writer FILE           appends records 0, 1, 2, …
 *   writer FILE SLOTS     writes record n at slot n mod SLOTS: the file stays small
 * A record is "SEQ <10 digits>\n" followed by a fill byte derived from the sequence
 * number, so a copy of the file can be checked for torn or missing records.
 */
import { fdatasyncSync, openSync, writeSync } from 'node:fs';

export const RECORD_BYTES = 4096;

export function record(seq: number): Buffer {
  const buffer = Buffer.alloc(RECORD_BYTES, 0x41 + (seq % 26));
  buffer.write(`SEQ ${String(seq).padStart(10, '0')}\n`, 0, 'latin1');
  return buffer;
}

function seqOf(content: Buffer, slot: number): number {
  const text = content.toString('latin1', slot * RECORD_BYTES, slot * RECORD_BYTES + 15);
  const match = /^SEQ (\d{10})\n$/.exec(text);
  if (!match) throw new Error(`slot ${slot} holds no record`);
  const seq = Number(match[1]);
  if (!content.subarray(slot * RECORD_BYTES, (slot + 1) * RECORD_BYTES).equals(record(seq))) {
    throw new Error(`record ${seq} in slot ${slot} is torn`);
  }
  return seq;
}

/**
 * Checks a copy of the log: whole, untorn records with no gap. Returns how many records
 * were written up to the copy (the highest sequence number + 1).
 */
export function checkLog(content: Buffer, slots?: number): number {
  if (content.length % RECORD_BYTES !== 0) throw new Error(`log length ${content.length} is not a whole number of records`);
  const count = content.length / RECORD_BYTES;
  if (slots === undefined) {
    for (let slot = 0; slot < count; slot++) {
      if (seqOf(content, slot) !== slot) throw new Error(`record ${slot} of ${count} is out of order`);
    }
    return count;
  }
  // A ring: every slot holds the latest record for it, and together they are the last
  // `count` records written, with no gap.
  const seqs = Array.from({ length: count }, (_, slot) => seqOf(content, slot));
  const last = Math.max(...seqs);
  seqs.forEach((seq, slot) => {
    if (seq % slots !== slot) throw new Error(`record ${seq} is in slot ${slot}`);
    if (count === slots && seq <= last - slots) throw new Error(`slot ${slot} holds record ${seq}, older than ${last - slots + 1}`);
  });
  return last + 1;
}

if (require.main === module) {
  const fd = openSync(process.argv[2], 'a');
  const slots = process.argv[3] ? Number(process.argv[3]) : undefined;
  const ring = slots ? openSync(process.argv[2], 'r+') : undefined;
  let seq = 0;
  let running = true;
  process.on('SIGTERM', () => (running = false));
  const tick = () => {
    for (let i = 0; i < 8 && running; i++) {
      if (ring !== undefined) writeSync(ring, record(seq), 0, RECORD_BYTES, (seq % slots!) * RECORD_BYTES);
      else writeSync(fd, record(seq));
      fdatasyncSync(ring ?? fd);
      seq++;
    }
    if (running) setImmediate(tick);
    else process.stdout.write(`${seq}\n`);
  };
  tick();
}
