/**
 * What the fake kernel says about its target types: the versions DM_LIST_VERSIONS lists,
 * and each target's table line (STATUSTYPE_TABLE) and status (STATUSTYPE_INFO).
 */
import type { NativeTargetVersion } from '../../../lib/native';
import type { FakeState, LoadedTarget } from './model';
import { sizeOf } from './paths';

/** What the Debian 6.1 kernel lists with dm-mod, dm-snapshot and dm-zero loaded, newest registration first. */
export const TARGET_VERSIONS: NativeTargetVersion[] = [
  { name: 'snapshot-merge', version: [1, 5, 0] },
  { name: 'snapshot-origin', version: [1, 9, 0] },
  { name: 'snapshot', version: [1, 16, 0] },
  { name: 'zero', version: [1, 1, 0] },
  { name: 'striped', version: [1, 6, 0] },
  { name: 'linear', version: [1, 4, 0] },
  { name: 'error', version: [1, 5, 0] },
];

/** The parameters as the kernel prints them (STATUSTYPE_TABLE): devices as MAJOR:MINOR. */
export function tableParams(target: LoadedTarget): string {
  const m = target.mapping;
  switch (m.kind) {
    case 'linear':
      return `${m.dev.key} ${m.offset}`;
    case 'striped':
      return `${m.stripes.length} ${m.chunk}` + m.stripes.map((stripe) => ` ${stripe.dev.key} ${stripe.offset}`).join('');
    case 'origin':
      return m.dev.key;
    case 'snapshot': {
      const type = m.store.persistent ? (m.overflowOption ? 'PO' : 'P') : 'N';
      const features = [m.zeroesCow ? 'discard_zeroes_cow' : '', m.passdownOrigin ? 'discard_passdown_origin' : ''].filter(Boolean);
      return `${m.origin.key} ${m.cow.key} ${type} ${m.store.chunkSize}` + (features.length ? ` ${features.length} ${features.join(' ')}` : '');
    }
    default:
      return '';
  }
}

/** The status text (STATUSTYPE_INFO). */
export function statusText(s: FakeState, target: LoadedTarget): string {
  const m = target.mapping;
  if (m.kind === 'striped') return `${m.stripes.length} ` + m.stripes.map((stripe) => `${stripe.dev.key} `).join('') + '1 ' + 'A'.repeat(m.stripes.length);
  if (m.kind !== 'snapshot') return '';
  if (!m.store.valid) return 'Invalid';
  if (m.overflowed) return 'Overflow';
  const { store } = m;
  const total = sizeOf(s, m.cow);
  if (!store.persistent) return `${store.nextFree}/${total} 0`;
  // persistent_usage: one header chunk, then one metadata chunk per area in use.
  const perArea = (store.chunkSize * 512) / 16;
  const area = Math.floor(store.exceptions.size / perArea);
  return `${store.nextFree * store.chunkSize}/${total} ${(area + 2) * store.chunkSize}`;
}
