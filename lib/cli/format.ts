/**
 * How the CLI prints what several commands share: JSON, origins and snapshots, and the
 * exit status of a program that a signal ended.
 */
import { constants } from 'node:os';
import type { Origin } from '../snapshot';
import { cowLabel, type Snapshot } from '../snapshot/snapshot';
import { type CliContext, ExitCode, writeLine } from './command';

export { cowLabel };

/** Writes `value` as indented JSON and a newline. */
export function writeJson(io: CliContext, value: unknown): void {
  writeLine(io.stdout, JSON.stringify(value, null, 2));
}

/** An origin as the CLI shows it (`ls`, `status`). */
export interface OriginFields {
  name: string;
  device: string;
  backing: string | null;
  sizeBytes: number;
}

/** A snapshot as the CLI shows it (`ls`, `status`). */
export interface SnapshotFields {
  name: string;
  device: string;
  cow: string;
  /** The COW file dmsnap created (served by the loop device `cow`), or null. */
  cowFile: string | null;
  chunkSectors: number;
  persistent: boolean;
  /** For a tracking snapshot, when it was taken (ISO 8601); null otherwise. */
  trackingSince: string | null;
}

export function originFields(origin: Origin): OriginFields {
  return { name: origin.name, device: origin.devicePath, backing: origin.backing.path, sizeBytes: origin.sizeBytes };
}

export function snapshotFields(snap: Snapshot): SnapshotFields {
  return { name: snap.name, device: snap.devicePath, cow: cowLabel(snap.info), cowFile: snap.info.cowFile, chunkSectors: snap.info.chunkSectors, persistent: snap.info.persistent, trackingSince: snap.info.trackingSince?.toISOString() ?? null };
}

/** The JSON keys of an origin, in the order `ls --json` and `status --json` print them. */
export function originJson(o: OriginFields): OriginFields {
  return { name: o.name, device: o.device, backing: o.backing, sizeBytes: o.sizeBytes };
}

/** The JSON keys of a snapshot, in the order `ls --json` and `status --json` print them. */
export function snapshotJson(s: SnapshotFields): SnapshotFields {
  return { name: s.name, device: s.device, cow: s.cow, cowFile: s.cowFile, chunkSectors: s.chunkSectors, persistent: s.persistent, trackingSince: s.trackingSince };
}

/**
 * The exit status a shell gives a program that signal ended: 128 + the signal's number
 * (SIGHUP 129, SIGINT 130, SIGKILL 137, SIGSEGV 139, SIGTERM 143).
 */
export function signalExitCode(signal: NodeJS.Signals): number {
  const number = (constants.signals as Partial<Record<string, number>>)[signal];
  return number === undefined ? ExitCode.failure : 128 + number;
}
