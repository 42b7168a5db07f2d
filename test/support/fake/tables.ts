/**
 * DM_TABLE_LOAD's half of the kernel: dm_table_add_target for each line, the target
 * constructors (linear, striped, snapshot-origin, zero, error; snapshots in snapshot.ts),
 * and the queue-limit check of the areas a table maps.
 */
import type { NativeTarget } from '../../../lib/native';
import { EINVAL, MAX_TYPE_NAME, MODE_READ, MODE_WRITE } from './constants';
import { refuse, type DevNumber, type FakeState, type LoadedTable, type LoadedTarget, type MappedDevice, type Mapping } from './model';
import { getDevice } from './opens';
import { field, parseUnsigned, splitArgs } from './parse';
import { logicalSectors, sizeOf } from './paths';
import { constructSnapshot } from './snapshot';
import { TARGET_VERSIONS } from './targets';

/** dm_table_add_target for each line, then the constructors of the targets. */
export function buildTable(s: FakeState, md: MappedDevice, specs: NativeTarget[], readOnly: boolean): LoadedTable {
  const table: LoadedTable = { readOnly, targets: [], devices: new Map(), md, size: 0 };
  if (specs.length === 0) refuse(EINVAL);
  for (const spec of specs) {
    const type = field(spec.type, MAX_TYPE_NAME);
    if (spec.length === 0) refuse(EINVAL);
    if (!TARGET_VERSIONS.some((v) => v.name === type)) refuse(EINVAL);
    if (spec.start !== table.size) refuse(EINVAL); // "Gap in table"
    const target: LoadedTarget = { start: spec.start, length: spec.length, type, params: spec.params, mapping: { kind: 'none' }, table };
    target.mapping = construct(s, table, type, splitArgs(spec.params), spec.length);
    table.targets.push(target);
    table.size += spec.length;
  }
  return table;
}

/** The constructor of one target type. */
function construct(s: FakeState, table: LoadedTable, type: string, argv: string[], length: number): Mapping {
  const tableMode = table.readOnly ? MODE_READ : MODE_READ | MODE_WRITE;
  switch (type) {
    case 'linear': {
      if (argv.length !== 2) refuse(EINVAL);
      const offset = parseUnsigned(argv[1]);
      if (offset === undefined) refuse(EINVAL);
      return { kind: 'linear', dev: getDevice(s, table, argv[0]!, tableMode), offset: offset! };
    }
    case 'striped':
      return constructStriped(s, table, argv, length, tableMode);
    case 'snapshot-origin':
      if (argv.length !== 1) refuse(EINVAL);
      return { kind: 'origin', dev: getDevice(s, table, argv[0]!, tableMode) };
    case 'snapshot':
    case 'snapshot-merge':
      return constructSnapshot(s, table, argv, type === 'snapshot-merge');
    case 'zero':
      if (argv.length !== 0) refuse(EINVAL);
      return { kind: 'none' };
    default: // error: takes any arguments
      return { kind: 'none' };
  }
}

function constructStriped(s: FakeState, table: LoadedTable, argv: string[], length: number, tableMode: number): Mapping {
  if (argv.length < 2) refuse(EINVAL);
  const stripes = parseUnsigned(argv[0], 0xffffffff);
  const chunk = parseUnsigned(argv[1], 0xffffffff);
  if (!stripes || !chunk) refuse(EINVAL);
  if (length % stripes! !== 0 || (length / stripes!) % chunk! !== 0) refuse(EINVAL);
  if (argv.length !== 2 + 2 * stripes!) refuse(EINVAL);
  const list: { dev: DevNumber; offset: number }[] = [];
  for (let i = 0; i < stripes!; i++) {
    const offset = parseUnsigned(argv[3 + 2 * i]);
    if (offset === undefined) refuse(EINVAL);
    list.push({ dev: getDevice(s, table, argv[2 + 2 * i]!, tableMode), offset: offset! });
  }
  return { kind: 'striped', chunk: chunk!, stripes: list };
}

/** The device areas a target uses, for device_area_is_invalid. */
function areas(s: FakeState, target: LoadedTarget): { dev: DevNumber; start: number; length: number }[] {
  const m = target.mapping;
  switch (m.kind) {
    case 'linear':
      return [{ dev: m.dev, start: m.offset, length: target.length }];
    case 'striped':
      return m.stripes.map((stripe) => ({ dev: stripe.dev, start: stripe.offset, length: target.length / m.stripes.length }));
    case 'origin':
      return [{ dev: m.dev, start: 0, length: target.length }];
    case 'snapshot':
      return [
        { dev: m.origin, start: 0, length: target.length },
        { dev: m.cow, start: 0, length: sizeOf(s, m.cow) },
      ];
    default:
      return [];
  }
}

/** dm_calculate_queue_limits: every area must lie inside its device, aligned to its block size. */
export function areasInvalid(s: FakeState, table: LoadedTable): boolean {
  for (const target of table.targets) {
    for (const area of areas(s, target)) {
      const size = sizeOf(s, area.dev);
      if (size === 0) continue;
      if (area.start >= size || area.start + area.length > size) return true;
      const block = logicalSectors(s, area.dev);
      if (block > 1 && (area.start % block !== 0 || area.length % block !== 0)) return true;
    }
  }
  return false;
}
