/**
 * An oracle for dmsnap's at-rest invariants that does not use dmsnap: it reads the kernel's
 * state with dmsetup and checks what must hold whenever no dmsnap call is running:
 *
 *   - no dmsnap device is suspended, and none has a table waiting in its inactive slot;
 *   - each origin NAME runs `snapshot-origin <NAME-real>` if and only if it has snapshots,
 *     and otherwise the same linear table as NAME-real — or, during a rollback,
 *     `snapshot-merge <NAME-real> <COW>`;
 *   - every snapshot's table names its origin's NAME-real, and a COW that no other table
 *     uses (but the snapshot being merged, whose COW the origin's snapshot-merge uses);
 *   - every COW mapping (tag role "cow") is the COW of a snapshot table of its origin, and
 *     runs linear over another device.
 */
import { run } from './system';

interface DmDevice {
  name: string;
  uuid: string;
  devNumber: string;
  suspended: boolean;
  inactive: boolean;
  table: string;
}

function dmDevices(): DmDevice[] {
  const out = run('dmsetup', ['info', '-c', '--noheadings', '--separator', '\t', '-o', 'name,uuid,major,minor,attr']);
  return out
    .split('\n')
    .filter((line) => line && line !== 'No devices found')
    .map((line) => {
      const [name, uuid, major, minor, attr] = line.split('\t');
      // attr: [0] L (live table) / [1] I (inactive table) / [2] s (suspended) / …
      return {
        name,
        uuid,
        devNumber: `${major.trim()}:${minor.trim()}`,
        inactive: attr[1] === 'I',
        suspended: attr[2] === 's',
        table: run('dmsetup', ['table', name]).trim(),
      };
    });
}

const TAG = /^DMSNAP-([0-9a-f]{16})-(origin|real|snap|cow)(?:-[0-9a-f]{8}(?:-track-\d+)?)?$/;

/** Every at-rest invariant that does not hold now, in plain words; empty when all hold. */
export function invariantViolations(): string[] {
  const devices = dmDevices();
  const problems: string[] = [];
  const groups = new Map<string, { origin?: DmDevice; real?: DmDevice; snaps: DmDevice[]; cows: DmDevice[] }>();
  for (const device of devices) {
    const match = TAG.exec(device.uuid);
    if (!match) continue;
    if (device.suspended) problems.push(`${device.name} is suspended`);
    if (device.inactive) problems.push(`${device.name} has an inactive table`);
    const group = groups.get(match[1]) ?? { snaps: [], cows: [] };
    if (match[2] === 'origin') group.origin = device;
    else if (match[2] === 'real') group.real = device;
    else if (match[2] === 'cow') group.cows.push(device);
    else group.snaps.push(device);
    groups.set(match[1], group);
  }
  const cowUsers = new Map<string, string[]>();
  for (const device of devices) {
    const fields = device.table.split(/\s+/);
    if (fields[2] === 'snapshot' || fields[2] === 'snapshot-merge') {
      cowUsers.set(fields[4], [...(cowUsers.get(fields[4]) ?? []), device.name]);
    }
  }
  for (const { origin, real, snaps, cows } of groups.values()) {
    for (const mapping of cows) {
      if (!/^0 \d+ linear \d+:\d+ \d+$/.test(mapping.table)) problems.push(`COW mapping ${mapping.name} runs "${mapping.table}"`);
      if (!(cowUsers.get(mapping.devNumber) ?? []).some((user) => [origin, ...snaps].some((d) => d?.name === user))) {
        problems.push(`COW mapping ${mapping.name} is the COW of no snapshot of its origin`);
      }
    }
    if (!origin || !real) {
      problems.push(`an incomplete dmsnap group: ${[origin, real, ...snaps].filter(Boolean).map((d) => d!.name).join(', ')}`);
      continue;
    }
    const fields = origin.table.split(/\s+/);
    const merging = fields[2] === 'snapshot-merge' && fields[3] === real.devNumber;
    if (snaps.length > 0 && !merging && (fields[2] !== 'snapshot-origin' || fields[3] !== real.devNumber)) {
      problems.push(`${origin.name} has ${snaps.length} snapshot(s) but runs "${origin.table}", not snapshot-origin ${real.devNumber}`);
    }
    if (snaps.length === 0 && !merging && origin.table !== real.table) {
      problems.push(`${origin.name} has no snapshot but runs "${origin.table}", not ${real.name}'s "${real.table}"`);
    }
    for (const snap of snaps) {
      const params = snap.table.split(/\s+/);
      if (params[2] !== 'snapshot' && params[2] !== 'snapshot-merge') {
        problems.push(`snapshot ${snap.name} runs "${snap.table}"`);
        continue;
      }
      if (params[3] !== real.devNumber) problems.push(`snapshot ${snap.name} reads ${params[3]}, not ${real.name} (${real.devNumber})`);
      const users = (cowUsers.get(params[4]) ?? []).filter((user) => !(merging && user === origin.name && fields[4] === params[4]));
      if (users.length > 1) problems.push(`the COW ${params[4]} of ${snap.name} is used by ${users.join(', ')}`);
    }
  }
  return problems;
}
