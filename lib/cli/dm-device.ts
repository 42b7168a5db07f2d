/**
 * `dmsnap dm suspend`, `resume`, `remove`, `rename`, `message` and `wait`: acting on a
 * device, or waiting for it.
 */
import type { DeviceInfo, DeviceRef } from '../dm/device-mapper';
import { checkDeviceUuid } from '../dm/names';
import { checkName, type Command, jsonOption, oneName, openDm, positionals, UsageError, writeLine } from './command';
import { deviceActionCommand } from './dm-common';
import { writeJson } from './format';

/** `dm suspend` and `dm resume`: one NAME, and whether to freeze the filesystem and flush queued I/O. */
function suspendLikeCommand(kind: 'suspend' | 'resume', summary: string, help: string): Command {
  return deviceActionCommand(
    { name: ['dm', kind], summary, usage: 'NAME [--nolockfs] [--noflush]', help, options: { nolockfs: { type: 'boolean' }, noflush: { type: 'boolean' } } },
    (dm, name, args) => dm[kind](name, { skipLockfs: args.values.nolockfs === true, noFlush: args.values.noflush === true }),
  );
}

export const suspendCommand = suspendLikeCommand(
  'suspend',
  'suspend a device, freezing a filesystem on it (like dmsetup suspend)',
  'Options:\n  --nolockfs   do not freeze the filesystem\n  --noflush    do not flush queued I/O\n\nExample:\n  dmsnap dm suspend wrap && dmsnap dm resume wrap',
);

export const resumeCommand = suspendLikeCommand(
  'resume',
  'resume a device, making a loaded table live (like dmsetup resume)',
  'Options:\n  --nolockfs   do not freeze the filesystem if a table swap needs a suspend\n  --noflush    do not flush queued I/O for that suspend\n\nExample:\n  dmsnap dm resume wrap',
);

export const removeCommand: Command = {
  name: ['dm', 'remove'],
  summary: 'remove devices (like dmsetup remove)',
  usage: 'NAME... [--deferred] [--retry]',
  help: 'Options:\n  --deferred   if a device is in use, remove it when its last user closes it\n  --retry      retry for about 5 s while the device is busy (udev or blkid may hold it briefly)\n\nExample:\n  dmsnap dm remove --retry wrap-snap',
  options: { deferred: { type: 'boolean' }, retry: { type: 'boolean' } },
  allowPositionals: true,
  async run(args, io) {
    const names = positionals(args, 1, Infinity, 'NAME');
    for (const name of names) checkName(name);
    using dm = await openDm(io);
    for (const name of names) {
      await dm.remove(name, { deferred: args.values.deferred === true, retry: args.values.retry === true });
    }
    return 0;
  },
};

export const renameCommand: Command = {
  name: ['dm', 'rename'],
  summary: 'rename a device, or set its uuid with --setuuid (like dmsetup rename)',
  usage: 'OLD NEW | NAME --setuuid UUID',
  help: 'A uuid can only be set on a device that has none.\n\nExamples:\n  dmsnap dm rename old new\n  dmsnap dm rename new --setuuid MY-UUID-1',
  options: { setuuid: { type: 'string' } },
  allowPositionals: true,
  async run(args, io) {
    const uuid = args.values.setuuid as string | undefined;
    if (uuid !== undefined) {
      const name = oneName(args);
      checkDeviceUuid(uuid, '--setuuid');
      using dm = await openDm(io);
      await dm.setUuid(name, uuid);
    } else {
      const [from, to] = positionals(args, 2, 2, 'OLD and NEW');
      checkName(from, 'OLD');
      checkName(to, 'NEW');
      using dm = await openDm(io);
      await dm.rename(from, to);
    }
    return 0;
  },
};

export const messageCommand: Command = {
  name: ['dm', 'message'],
  summary: 'send a message to a target (like dmsetup message)',
  usage: 'NAME SECTOR MESSAGE...',
  help: 'Prints the reply, if the target gives one.\n\nExample:\n  dmsnap dm message pool 0 "create_thin 0"',
  options: {},
  allowPositionals: true,
  async run(args, io) {
    const [name, sectorText, ...words] = positionals(args, 3, Infinity, 'NAME, SECTOR and MESSAGE');
    checkName(name);
    if (!/^\d+$/.test(sectorText) || !Number.isSafeInteger(Number(sectorText))) throw new UsageError(`SECTOR must be a whole number of sectors; got "${sectorText}"`);
    if (words.join(' ').trim() === '') throw new UsageError('MESSAGE is empty');
    using dm = await openDm(io);
    const reply = await dm.message(name, Number(sectorText), words.join(' '));
    if (reply) writeLine(io.stdout, reply);
    return 0;
  },
};

export const waitCommand: Command = {
  name: ['dm', 'wait'],
  summary: "wait until a device's event counter differs from EVENT_NR (like dmsetup wait)",
  usage: 'NAME [EVENT_NR] [--timeout SECONDS] [--json]',
  help: 'Without EVENT_NR it waits for the next event. Exits 1 on timeout.\n\nOptions:\n  --timeout SECONDS   give up after this long\n  --json              print {"name", "eventNr"} when the event comes\n\nExample:\n  dmsnap dm wait wrap-snap $(dmsnap dm info wrap-snap --json | jq ".devices[0].eventNr")',
  options: { timeout: { type: 'string' }, ...jsonOption },
  allowPositionals: true,
  async run(args, io) {
    const [name, eventText] = positionals(args, 1, 2, 'NAME');
    checkName(name);
    if (eventText !== undefined && !(/^\d+$/.test(eventText) && Number(eventText) <= 0xffffffff)) throw new UsageError(`EVENT_NR must be a whole number from 0 to 4294967295; got "${eventText}"`);
    const timeoutText = args.values.timeout as string | undefined;
    if (timeoutText !== undefined && !/^\d+(\.\d+)?$/.test(timeoutText)) throw new UsageError(`--timeout must be a number of seconds; got "${timeoutText}"`);
    using dm = await openDm(io);
    let result: DeviceInfo;
    try {
      result = await dm.waitEvent(name as DeviceRef, eventText === undefined ? undefined : Number(eventText), {
        timeoutMs: timeoutText === undefined ? undefined : Math.round(Number(timeoutText) * 1000),
      });
    } catch (error) {
      if ((error as Error).name === 'TimeoutError') {
        writeLine(io.stderr, `dmsnap dm wait: no event on "${name}" within ${timeoutText} s`);
        return 1;
      }
      throw error;
    }
    if (args.values.json) writeJson(io, { name: result.name, eventNr: result.eventNr });
    return 0;
  },
};
