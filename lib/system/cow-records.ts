/**
 * The record of each COW file dmsnap creates, kept beside the lock files (in
 * `<lock dir>/cow-files`, a directory only root controls, on tmpfs under /run). The kernel
 * knows a snapshot's loop device but not the path of the file under it, and a process can
 * die between creating a file and handing it to a snapshot: the record, written before
 * the file exists, is what lets `drop` delete the file and `recover` delete one a crash
 * left behind — and only that one (its inode is compared before anything is deleted).
 *
 * One JSON file per snapshot, `<originId>-<snapId>.json`, replaced atomically (a
 * temporary file, fsync, rename, fsync of the directory).
 */
import { closeSync, constants, fsyncSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ensureTrustedDirectory } from '../safety/paths';
import type { FileIdentity } from './cow-file';
import { syncDirectory } from './cow-file';
import { checkLockDir, type LockOptions } from './lock';

/**
 * Where a COW file is in its life: 'creating' (the record exists, the file may exist under
 * its temporary name), 'created' (it has the user's name and identity), 'attached' (a loop
 * device serves it), 'kept' (its snapshot was dropped with keepCowFile).
 */
export type CowFileState = 'creating' | 'created' | 'attached' | 'kept';

/** What dmsnap records of one COW file. */
export interface CowFileRecord {
  version: 1;
  originId: string;
  snapId: string;
  originName: string;
  snapshotName: string;
  /** The COW file, as the user named it (absolute). */
  path: string;
  /** The name it is created under first. */
  temporaryPath: string;
  /** Device and inode of the file once created. */
  identity?: FileIdentity;
  /** The loop device number, once attached. */
  loop?: number;
  sizeBytes: number;
  state: CowFileState;
  /** ISO 8601. */
  createdAt: string;
}

const RECORD = /^([0-9a-f]{16})-([0-9a-f]{8})\.json$/;

/** The COW-file records under one lock directory. */
export class CowRecords {
  private constructor(readonly dir: string) {}

  /** The records beside the lock files `options` name; the directory is checked (and created) like the lock directory. */
  static of(options: LockOptions = {}): CowRecords {
    const dir = ensureTrustedDirectory(join(checkLockDir(options), 'cow-files'), {
      what: 'COW-file record directory',
      advice: 'remove it (only dmsnap writes there), or set DMSNAP_LOCK_DIR (the lockDir option) to a directory that root owns with mode 0700',
      code: 'ERR_DMSNAP_UNSAFE_LOCK_DIR',
      private: true,
    });
    return new CowRecords(dir);
  }

  private file(originId: string, snapId: string): string {
    return join(this.dir, `${originId}-${snapId}.json`);
  }

  /** The record of snapshot `snapId` of origin `originId`, if any. */
  get(originId: string, snapId: string): CowFileRecord | undefined {
    let text: string;
    try {
      text = readFileSync(this.file(originId, snapId), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    const record = JSON.parse(text) as CowFileRecord;
    return record.version === 1 && record.originId === originId && record.snapId === snapId ? record : undefined;
  }

  /** Every record (of every origin). */
  list(): CowFileRecord[] {
    const records: CowFileRecord[] = [];
    for (const entry of readdirSync(this.dir)) {
      const match = RECORD.exec(entry);
      const record = match ? this.get(match[1], match[2]) : undefined;
      if (record) records.push(record);
    }
    return records;
  }

  /** Writes `record` durably, replacing the previous version atomically. */
  put(record: CowFileRecord): void {
    const target = this.file(record.originId, record.snapId);
    const temporary = `${target}.new`;
    const fd = openSync(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o600);
    try {
      writeSync(fd, `${JSON.stringify(record, null, 2)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, target);
    syncDirectory(this.dir);
  }

  /** Removes the record of `record`'s snapshot (none there is fine). */
  remove(record: Pick<CowFileRecord, 'originId' | 'snapId'>): void {
    try {
      unlinkSync(this.file(record.originId, record.snapId));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }

  /** The record of a kept file at `path`, if dmsnap kept one there. */
  keptAt(path: string): CowFileRecord | undefined {
    return this.list().find((r) => r.state === 'kept' && r.path === path);
  }
}
