/**
 * Writes that reach snapshots: each copies the origin chunks it touches to the COW of
 * every active snapshot (or, written to a snapshot itself, moves them there); a full COW
 * invalidates the snapshot, or with PO overflows it.
 */
import { tableEvent } from './events';
import type { DevNumber, FakeState, LoadedTarget, SnapshotMapping } from './model';
import { mdOf, resolveForTest, sizeOf, storageKey } from './paths';
import { snapshotTargets } from './snapshot';

/** prepare_exception: takes room on the COW for one chunk; false when it is full. */
function allocateChunk(s: FakeState, m: SnapshotMapping, chunk: number): boolean {
  const { store } = m;
  const size = sizeOf(s, m.cow);
  if (store.persistent) {
    if (size < (store.nextFree + 1) * store.chunkSize) return false;
    store.nextFree++;
    // Skip the next metadata area's chunk.
    if (store.nextFree % ((store.chunkSize * 512) / 16 + 1) === 1) store.nextFree++;
  } else {
    if (size < store.nextFree + store.chunkSize) return false;
    store.nextFree += store.chunkSize;
  }
  store.exceptions.add(chunk);
  return true;
}

function invalidate(s: FakeState, target: LoadedTarget): void {
  const m = target.mapping as SnapshotMapping;
  if (!m.store.valid) return;
  m.store.valid = false;
  tableEvent(s, target.table.md);
}

function chunksOf(m: SnapshotMapping, sectors: number, start: number): { chunk: number; sector: number }[] {
  const size = m.store.chunkSize;
  const list: { chunk: number; sector: number }[] = [];
  if (sectors <= 0) return list;
  for (let chunk = Math.floor(start / size); chunk <= Math.floor((start + sectors - 1) / size); chunk++) {
    list.push({ chunk, sector: Math.max(start, chunk * size) });
  }
  return list;
}

/** The writes a write to `dev` makes to origins: through each snapshot-origin target, or to `dev` itself. */
function originWrites(s: FakeState, dev: DevNumber, sectors: number, startSector: number) {
  const writes: { origin: DevNumber; start: number; sectors: number }[] = [];
  for (const target of mdOf(s, dev)?.live?.targets ?? []) {
    if (target.mapping.kind !== 'origin') continue;
    const from = Math.max(startSector, target.start);
    const to = Math.min(startSector + sectors, target.start + target.length);
    if (to > from) writes.push({ origin: target.mapping.dev, start: from - target.start, sectors: to - from });
  }
  if (writes.length === 0) writes.push({ origin: dev, start: startSector, sectors });
  return writes;
}

/** FakeSystem.writeOrigin. */
export function writeOrigin(s: FakeState, nameOrPath: string, sectors: number, startSector = 0): void {
  const writes = originWrites(s, resolveForTest(s, nameOrPath), sectors, startSector);
  const snapshots = snapshotTargets(s);
  for (const write of writes) {
    for (const target of snapshots) {
      const m = target.mapping as SnapshotMapping;
      if (m.origin.key !== write.origin.key || m.merge) continue;
      for (const { chunk, sector } of chunksOf(m, write.sectors, write.start)) {
        // __origin_write: only valid, active snapshots, and not past the snapshot's end.
        if (!m.store.valid || !m.active || sector >= target.table.size) continue;
        if (m.store.exceptions.has(chunk)) continue;
        if (!allocateChunk(s, m, chunk)) invalidate(s, target);
      }
    }
  }
}

/** FakeSystem.writeSnapshot. */
export function writeSnapshot(s: FakeState, nameOrPath: string, sectors: number, startSector = 0): void {
  const md = mdOf(s, resolveForTest(s, nameOrPath));
  const target = md?.live?.targets.find((t) => t.mapping.kind === 'snapshot' && !(t.mapping as SnapshotMapping).merge);
  if (!target) throw new Error(`fake: ${nameOrPath} is not a snapshot device`);
  const m = target.mapping as SnapshotMapping;
  for (const { chunk } of chunksOf(m, sectors, startSector)) {
    if (!m.store.valid || m.overflowed) return;
    if (m.store.exceptions.has(chunk)) continue;
    if (!allocateChunk(s, m, chunk)) {
      if (m.overflowOption) m.overflowed = true;
      else invalidate(s, target);
    }
  }
}

/** FakeSystem.zeroDevice: the snapshot metadata at the start of the device is gone. */
export function zeroDevice(s: FakeState, nameOrPath: string): void {
  s.cowMetadata.delete(storageKey(s, resolveForTest(s, nameOrPath)));
}
