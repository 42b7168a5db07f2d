/**
 * `dmsnap dm …`: low-level device-mapper commands, named and shaped like dmsetup's so
 * that its users' habits (and scripts) carry over. Plain output of `table` and `status`
 * is byte-for-byte what dmsetup prints; `--json` gives the same data with real types.
 * The commands live in dm-list.ts, dm-table.ts and dm-device.ts.
 */
import type { Command } from './command';
import { messageCommand, removeCommand, renameCommand, resumeCommand, suspendCommand, waitCommand } from './dm-device';
import { infoCommand, lsCommand, targetsCommand, versionCommand } from './dm-list';
import { clearCommand, createCommand, depsCommand, loadCommand, statusCommand, tableCommand } from './dm-table';

/** The `dmsnap dm …` commands, in the order `dmsnap --help` lists them. */
export const dmCommands: Command[] = [
  versionCommand,
  lsCommand,
  targetsCommand,
  createCommand,
  loadCommand,
  clearCommand,
  suspendCommand,
  resumeCommand,
  removeCommand,
  renameCommand,
  infoCommand,
  tableCommand,
  statusCommand,
  depsCommand,
  messageCommand,
  waitCommand,
];
