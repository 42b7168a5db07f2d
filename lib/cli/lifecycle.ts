/**
 * The lifecycle commands: prepare, detach, release, snapshot, status, drop, rollback, ls, backup,
 * image, changes, apply, recover and monitor, each in its own file; each is a few lines over the library, and stdout carries
 * data only.
 */
import type { Command } from './command';
import { backupCommand } from './backup';
import { dropCommand } from './drop';
import { imageCommand } from './image';
import { applyCommand, changesCommand } from './incremental';
import { detachCommand, prepareCommand, releaseCommand } from './prepare';
import { recoverCommand } from './recover';
import { rollbackCommand } from './rollback';
import { snapshotCommand } from './snapshot';
import { lsCommand, statusCommand } from './status';
import { monitorCommand } from './monitor';

/** The lifecycle commands, in the order `dmsnap --help` lists them (before the dm ones). */
export const lifecycleCommands: Command[] = [
  prepareCommand,
  detachCommand,
  releaseCommand,
  snapshotCommand,
  statusCommand,
  dropCommand,
  rollbackCommand,
  lsCommand,
  backupCommand,
  imageCommand,
  changesCommand,
  applyCommand,
  recoverCommand,
  monitorCommand,
];
