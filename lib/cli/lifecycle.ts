/**
 * The lifecycle commands: prepare, release, snapshot, status, drop, ls, backup, image.
 * Each is a few lines over the library; stdout carries data only.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { DmsnapError } from '../errors';
import { listOrigins, openOrigin, prepare, type Origin } from '../snapshot';
import { recover } from '../snapshot/recover';
import { ensureMountDir } from '../safety/paths';
import type { Snapshot, SnapshotStatusReport } from '../snapshot/snapshot';
import { type Command, ExitCode, UsageError, writeLine } from './command';
import { imageCommand } from './image';
import { info, invalidMessage, lifecycle, one, snapshotOptions, takeSnapshot, withDm } from './lifecycle-common';
import { formatBytes } from './sizes';

const prepareCommand: Command = {
  name: ['prepare'],
  summary: 'wrap a block device for snapshots, before it is mounted (step 0)',
  usage: 'DEVICE [--name NAME]',
  help: `Creates /dev/mapper/NAME (mount the filesystem there, not on DEVICE) and NAME-real.
Prints /dev/mapper/NAME. Run it again for the same device: it does nothing.

Options:
  --name NAME   the wrapper's name (default: DEVICE's base name)

Example:
  dmsnap prepare /dev/md2 && mount /dev/mapper/md2 /srv`,
  options: { name: { type: 'string' } },
  allowPositionals: true,
  async run(args, io) {
    const device = one(args, 'DEVICE');
    return withDm(io, async (dm) => {
      const origin = await prepare(device, { ...lifecycle(io, dm), name: args.values.name as string | undefined });
      writeLine(io.stdout, origin.devicePath);
      return ExitCode.ok;
    });
  },
};

const releaseCommand: Command = {
  name: ['release'],
  summary: 'undo prepare: remove NAME and NAME-real (no snapshots, not mounted)',
  usage: 'NAME',
  help: 'Example:\n  umount /srv && dmsnap release md2',
  options: {},
  allowPositionals: true,
  async run(args, io) {
    const name = one(args, 'NAME');
    return withDm(io, async (dm) => {
      await (await openOrigin(name, lifecycle(io, dm))).release();
      return ExitCode.ok;
    });
  },
};

const snapshotCommand: Command = {
  name: ['snapshot'],
  summary: 'take a snapshot of a prepared origin (step 1); prints its device',
  usage: 'NAME --cow DEVICE [--chunk-size SIZE] [--transient] [--snapshot-name SNAP] [--force-wipe]',
  help: `The first chunk of the COW device is zeroed; a COW that holds a filesystem or other
signature is refused unless --force-wipe. Prints the snapshot's device on stdout and the
freeze time on stderr.

Options:
  --cow DEVICE            block device for the copied blocks (required)
  --chunk-size SIZE       sectors (32) or a size (16k, 64KiB, 1M); default 32 sectors
  --transient             a transient (N) snapshot instead of a persistent (P) one
  --snapshot-name SNAP    the snapshot's name (default NAME-snap)
  --force-wipe            overwrite a COW device that holds data

Example:
  dmsnap snapshot md2 --cow /dev/sdb6 --chunk-size 64k`,
  options: { ...snapshotOptions, transient: { type: 'boolean' } },
  allowPositionals: true,
  async run(args, io) {
    const name = one(args, 'NAME');
    return withDm(io, async (dm) => {
      const origin = await openOrigin(name, lifecycle(io, dm));
      const snap = await takeSnapshot(origin, args, args.values.transient === true);
      writeLine(io.stdout, snap.devicePath);
      info(io, `dmsnap: ${name} was frozen for ${snap.freezeMs!.toFixed(1)} ms`);
      return ExitCode.ok;
    });
  },
};

function usageBar(percent: number | null): string {
  if (percent === null) return '[' + '-'.repeat(20) + ']';
  const filled = Math.min(20, Math.round(percent / 5));
  return `[${'#'.repeat(filled)}${'.'.repeat(20 - filled)}]`;
}

function snapshotLine(s: SnapshotStatusReport & { cow: string; chunkSectors: number; persistent: boolean }): string {
  const usage =
    s.allocatedSectors === null ? 'usage -' : `${s.allocatedSectors}/${s.totalSectors} sectors ${usageBar(s.usedPercent)} ${s.usedPercent!.toFixed(1)}%`;
  return `  ${s.name}  ${s.state}  ${usage}  cow ${s.cow}  chunk ${s.chunkSectors}  ${s.persistent ? 'persistent' : 'transient'}`;
}

const statusCommand: Command = {
  name: ['status'],
  summary: 'state and COW usage of origins and their snapshots (step 4)',
  usage: '[NAME] [--json]',
  help: `One line per origin and per snapshot. --json prints
  {"origins": [{"name", "device", "backing", "sizeBytes", "suspended",
    "snapshots": [{"name", "device", "cow", "chunkSectors", "persistent", "state",
                   "allocatedSectors", "totalSectors", "metadataSectors", "usedPercent"}]}]}
with numbers as numbers; state is active, invalid, overflow, merging, merge-failed or unknown.

Example:
  dmsnap status md2 --json`,
  options: { json: { type: 'boolean' } },
  allowPositionals: true,
  async run(args, io) {
    const name = args.positionals.length > 0 ? one(args, 'NAME') : undefined;
    return withDm(io, async (dm) => {
      const options = lifecycle(io, dm);
      const origins = name ? [await openOrigin(name, options)] : await listOrigins(options);
      const statuses = [];
      for (const origin of origins) statuses.push(await origin.status());
      if (args.values.json) {
        const origins = statuses.map((o) => ({
          name: o.name,
          device: o.device,
          backing: o.backing,
          sizeBytes: o.sizeBytes,
          suspended: o.suspended,
          snapshots: o.snapshots.map((s) => ({
            name: s.name,
            device: s.device,
            cow: s.cow,
            chunkSectors: s.chunkSectors,
            persistent: s.persistent,
            state: s.state,
            allocatedSectors: s.allocatedSectors,
            totalSectors: s.totalSectors,
            metadataSectors: s.metadataSectors,
            usedPercent: s.usedPercent,
          })),
        }));
        writeLine(io.stdout, JSON.stringify({ origins }, null, 2));
        return ExitCode.ok;
      }
      if (statuses.length === 0) info(io, 'dmsnap: no origins; prepare one with "dmsnap prepare DEVICE"');
      for (const o of statuses) {
        writeLine(
          io.stdout,
          `${o.name}  ${o.suspended ? 'SUSPENDED' : 'live'}  ${o.device}  backing ${o.backing ?? '?'}  ${formatBytes(o.sizeBytes)}  ${o.snapshots.length} snapshot(s)`,
        );
        for (const s of o.snapshots) writeLine(io.stdout, snapshotLine(s));
      }
      return ExitCode.ok;
    });
  },
};

const dropCommand: Command = {
  name: ['drop'],
  summary: 'remove snapshots of NAME (all, or one); the last restores the linear table (step 5)',
  usage: 'NAME [--snapshot-name SNAP]',
  help: 'Fails with exit code 4 while a snapshot is mounted.\n\nOptions:\n  --snapshot-name SNAP   drop only this snapshot\n\nExample:\n  dmsnap drop md2',
  options: { 'snapshot-name': { type: 'string' } },
  allowPositionals: true,
  async run(args, io) {
    const name = one(args, 'NAME');
    return withDm(io, async (dm) => {
      const origin = await openOrigin(name, lifecycle(io, dm));
      const only = args.values['snapshot-name'] as string | undefined;
      const snaps = (await origin.snapshots()).filter((s) => only === undefined || s.name === only);
      if (only !== undefined && snaps.length === 0) {
        throw new DmsnapError(`${name} has no snapshot named "${only}"; see "dmsnap status ${name}"`, 'ENXIO');
      }
      for (const snap of snaps) await snap.drop();
      if (snaps.length === 0) info(io, `dmsnap: ${name} has no snapshots`);
      return ExitCode.ok;
    });
  },
};

const lsCommand: Command = {
  name: ['ls'],
  summary: 'list the origins and snapshots dmsnap manages (found from the kernel)',
  usage: '[--json]',
  help: `Columns: NAME TYPE DEVICE BACKING-OR-COW SIZE. --json prints
  {"origins": [{"name", "device", "backing", "sizeBytes",
    "snapshots": [{"name", "device", "cow", "chunkSectors", "persistent"}]}]}

Example:
  dmsnap ls`,
  options: { json: { type: 'boolean' } },
  async run(args, io) {
    return withDm(io, async (dm) => {
      const origins = await listOrigins(lifecycle(io, dm));
      const rows: { origin: Origin; snaps: Snapshot[] }[] = [];
      for (const origin of origins) rows.push({ origin, snaps: await origin.snapshots() });
      const cowOf = (s: Snapshot) => s.info.cow.path ?? `${s.info.cow.major}:${s.info.cow.minor}`;
      if (args.values.json) {
        const out = rows.map(({ origin, snaps }) => ({
          name: origin.name,
          device: origin.devicePath,
          backing: origin.backing.path,
          sizeBytes: origin.sizeBytes,
          snapshots: snaps.map((s) => ({ name: s.name, device: s.devicePath, cow: cowOf(s), chunkSectors: s.info.chunkSectors, persistent: s.info.persistent })),
        }));
        writeLine(io.stdout, JSON.stringify({ origins: out }, null, 2));
        return ExitCode.ok;
      }
      const table: string[][] = [['NAME', 'TYPE', 'DEVICE', 'BACKING/COW', 'SIZE']];
      for (const { origin, snaps } of rows) {
        table.push([origin.name, 'origin', origin.devicePath, origin.backing.path ?? '?', formatBytes(origin.sizeBytes)]);
        for (const s of snaps) table.push([s.name, 'snapshot', s.devicePath, cowOf(s), formatBytes(origin.sizeBytes)]);
      }
      const widths = table[0].map((_, c) => Math.max(...table.map((r) => r[c].length)));
      for (const row of table) writeLine(io.stdout, row.map((cell, c) => (c === row.length - 1 ? cell : cell.padEnd(widths[c]))).join('  '));
      return ExitCode.ok;
    });
  },
};


const backupCommand: Command = {
  name: ['backup'],
  summary: 'snapshot, mount read-only, run COMMAND in it, then unmount and drop',
  usage: 'NAME --cow DEVICE [--chunk-size SIZE] [--mount-dir DIR] [--usage-limit PERCENT] -- COMMAND [ARGS...]',
  help: `COMMAND runs with the snapshot's mount directory as its working directory and
DMSNAP_MOUNT, DMSNAP_DEVICE and DMSNAP_ORIGIN in its environment. The snapshot is
unmounted and dropped afterwards, also on failure, SIGINT or SIGTERM. If the snapshot
becomes invalid (COW full) or its usage reaches --usage-limit, COMMAND is terminated
and dmsnap exits 3. Otherwise it exits with COMMAND's status.

Options:
  --cow DEVICE              block device for the copied blocks (required)
  --chunk-size SIZE         as for dmsnap snapshot
  --mount-dir DIR           where to mount (default: a new directory under /tmp)
  --usage-limit PERCENT     stop COMMAND when the COW is this full
  --snapshot-name SNAP      the snapshot's name (default NAME-snap)
  --force-wipe              overwrite a COW device that holds data

Example:
  dmsnap backup md2 --cow /dev/sdb6 -- tar -czf /backup/md2.tgz .`,
  options: { ...snapshotOptions, 'mount-dir': { type: 'string' }, 'usage-limit': { type: 'string' } },
  allowPositionals: true,
  async run(args, io) {
    const [name, program, ...programArgs] = args.positionals;
    if (!name) throw new UsageError('missing NAME');
    if (!program) throw new UsageError('missing COMMAND after "--"');
    const limitText = args.values['usage-limit'] as string | undefined;
    const limit = limitText === undefined ? undefined : Number(limitText);
    if (limit !== undefined && !(limit > 0 && limit <= 100)) throw new UsageError(`--usage-limit must be a percentage above 0 and at most 100; got "${limitText}"`);
    return withDm(io, async (dm) => {
      const origin = await openOrigin(name, lifecycle(io, dm));
      // Checked before the snapshot exists: a mount directory another user controls is refused.
      const madeDir = args.values['mount-dir'] === undefined;
      const dir = madeDir ? mkdtempSync('/tmp/dmsnap-backup-') : ensureMountDir(args.values['mount-dir'] as string);
      let stopSignal: NodeJS.Signals | undefined;
      let child: import('node:child_process').ChildProcess | undefined;
      const onSignal = (signal: NodeJS.Signals) => {
        stopSignal ??= signal;
        child?.kill('SIGTERM');
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      let snap: Snapshot | undefined;
      const watching = new AbortController();
      try {
        snap = await takeSnapshot(origin, args);
        info(io, `dmsnap: ${name} was frozen for ${snap.freezeMs!.toFixed(1)} ms`);
        if (stopSignal) return 128 + (stopSignal === 'SIGINT' ? 2 : 15);
        const mounted = await snap.mount(dir);
        info(io, `dmsnap: ${snap.devicePath} (${mounted.fsType}) mounted read-only on ${dir}`);
        if (stopSignal) return 128 + (stopSignal === 'SIGINT' ? 2 : 15);

        let invalid: string | undefined;
        let last: SnapshotStatusReport | undefined;
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const { spawn } = require('node:child_process') as typeof import('node:child_process');
        const running = spawn(program, programArgs, {
          cwd: dir,
          stdio: 'inherit',
          env: { ...process.env, DMSNAP_MOUNT: dir, DMSNAP_DEVICE: snap.devicePath, DMSNAP_ORIGIN: name },
        });
        child = running;
        const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
          running.on('error', (error) => resolve({ code: null, signal: null, error }));
          running.on('exit', (code, signal) => resolve({ code, signal }));
        });
        const current = snap;
        void (async () => {
          for await (const report of current.watch({ intervalMs: 500, signal: watching.signal })) {
            if (report.state === 'active') last = report;
            const unusable = report.state !== 'active' && report.state !== 'merging';
            const overLimit = limit !== undefined && report.usedPercent !== null && report.usedPercent >= limit;
            if (unusable || overLimit) {
              invalid = unusable ? `became ${report.state}` : `reached the usage limit of ${limit}%`;
              if (overLimit) last = report;
              running.kill('SIGTERM');
              setTimeout(() => running.kill('SIGKILL'), 5000).unref();
              return;
            }
          }
        })().catch(() => undefined);
        const result = await exited;
        // The watch samples; the last word is the state once COMMAND is done.
        if (!invalid) {
          const final = await current.status();
          if (final.state !== 'active' && final.state !== 'merging') invalid = `became ${final.state}`;
        }
        if (invalid) {
          writeLine(io.stderr, `dmsnap backup: ${invalidMessage(name, current, last, invalid)}`);
          return ExitCode.snapshotInvalid;
        }
        if (result.error) {
          writeLine(io.stderr, `dmsnap backup: cannot run "${program}": ${result.error.message}`);
          return 127;
        }
        if (stopSignal) return 128 + (stopSignal === 'SIGINT' ? 2 : 15);
        if (result.signal) return 128 + (result.signal === 'SIGKILL' ? 9 : result.signal === 'SIGINT' ? 2 : 15);
        return result.code ?? ExitCode.failure;
      } finally {
        watching.abort();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        if (snap) {
          if (snap.mountInfo) await snap.unmount();
          await snap.drop();
        }
        if (madeDir) rmSync(dir, { recursive: true, force: true });
      }
    });
  },
};


const recoverCommand: Command = {
  name: ['recover'],
  summary: 'repair what an interrupted dmsnap left: resume origins, remove half-made snapshots',
  usage: '[--json]',
  help: `Looks only at devices dmsnap created (its uuid tags) and brings each origin to either
"snapshot active and valid" or "no snapshot, linear over NAME-real". Safe to run at any
time, also from a boot unit; running it twice does nothing the second time. Origins that
another dmsnap process is working on are skipped.

Options:
  --json   {"actions": [{"origin", "device", "action", "reason"}]} where action is resumed,
           cleared-inactive-table, removed, restored-linear-table, skipped or kept

Example:
  dmsnap recover`,
  options: { json: { type: 'boolean' } },
  async run(args, io) {
    return withDm(io, async (dm) => {
      const actions = await recover(lifecycle(io, dm));
      if (args.values.json) {
        writeLine(io.stdout, JSON.stringify({ actions }, null, 2));
        return ExitCode.ok;
      }
      const done = actions.filter((a) => a.action !== 'kept');
      for (const a of done) writeLine(io.stdout, `${a.action} ${a.device}: ${a.reason}`);
      if (done.length === 0) info(io, 'dmsnap: nothing to recover');
      return ExitCode.ok;
    });
  },
};

/** The lifecycle commands, in the order `dmsnap --help` lists them (before the dm ones). */
export const lifecycleCommands: Command[] = [
  prepareCommand,
  releaseCommand,
  snapshotCommand,
  statusCommand,
  dropCommand,
  lsCommand,
  backupCommand,
  imageCommand,
  recoverCommand,
];

