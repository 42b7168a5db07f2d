/**
 * Keys in tables: masking as `dmsetup table` masks them, the CLI's use of it, and
 * DM_SECURE_DATA_FLAG on the ioctls that carry keys. (The VM suite's cli-dm compares
 * with dmsetup itself on real crypt and integrity devices.)
 */
import { PassThrough } from 'node:stream';
import { DeviceMapper, maskTableKeys, maskTargetKeys, sectors, tableCarriesKeys, type NativeBinding, type NativeControl, type TargetLine } from '../../lib';
import { main } from '../../lib/cli/main';
import { createFakeSystem, fakeNodeDirectory, type FakeSystem } from '../support/fake-binding';

const KEY = '0102030405060708090a0102030405060102030405060708090a010203040506';
const ZEROS = '0'.repeat(64);

describe('maskTargetKeys', () => {
  it.each([
    ['crypt', `aes-xts-plain64 ${KEY} 0 7:0 0`, `aes-xts-plain64 ${ZEROS} 0 7:0 0`],
    ['crypt', `aes-xts-plain64 ${KEY} 0 7:0 0 2 allow_discards sector_size:4096`, `aes-xts-plain64 ${ZEROS} 0 7:0 0 2 allow_discards sector_size:4096`],
    // A kernel keyring reference is not a key: dmsetup shows it.
    ['crypt', 'aes-xts-plain64 :32:logon:my:key 0 7:0 0', 'aes-xts-plain64 :32:logon:my:key 0 7:0 0'],
    // The kernel prints "-" for an empty key; dmsetup turns every byte into '0'.
    ['crypt', 'cipher_null-ecb - 0 7:0 0', 'cipher_null-ecb 0 0 7:0 0'],
    ['crypt', 'onlyoneword', 'onlyoneword'],
    ['crypt', '', ''],
    ['crypt', 'aes ', 'aes '],
    // Bytes, not characters: "käy" is four bytes in UTF-8, so four zeroes.
    ['crypt', 'aes k\u00e4y 0', 'aes 0000 0'],
    [
      'integrity',
      `7:0 0 32 J 2 internal_hash:crc32 journal_crypt:ctr(aes):${KEY}`,
      `7:0 0 32 J 2 internal_hash:crc32 journal_crypt:ctr(aes):${ZEROS}`,
    ],
    [
      'integrity',
      `7:0 0 32 J 3 internal_hash:hmac(sha256):${KEY} journal_crypt:ctr(aes):${KEY} journal_mac:hmac(sha256):${KEY}`,
      `7:0 0 32 J 3 internal_hash:hmac(sha256):${ZEROS} journal_crypt:ctr(aes):${ZEROS} journal_mac:hmac(sha256):${ZEROS}`,
    ],
    // Only the first occurrence of each name, as dmsetup's strstr finds it.
    ['integrity', 'internal_hash:a:11 internal_hash:b:22', 'internal_hash:a:00 internal_hash:b:22'],
    ['integrity', 'x journal_mac:alg', 'x journal_mac:alg'],
    ['linear', `7:0 ${KEY}`, `7:0 ${KEY}`],
    ['snapshot', '7:0 7:1 P 32', '7:0 7:1 P 32'],
  ])('%s "%s" → "%s"', (type, params, masked) => {
    expect(maskTargetKeys(type, params)).toBe(masked);
  });

  it('masks a copy of a whole table and says which tables hold keys', () => {
    const table: TargetLine[] = [
      { start: sectors(0), length: sectors(8), type: 'zero', params: '' },
      { start: sectors(8), length: sectors(8), type: 'crypt', params: `aes-xts-plain64 ${KEY} 0 7:0 0` },
    ];
    const masked = maskTableKeys(table);
    expect(masked.map((l) => l.params)).toEqual(['', `aes-xts-plain64 ${ZEROS} 0 7:0 0`]);
    expect(table[1].params).toContain(KEY);
    expect(tableCarriesKeys(table)).toBe(true);
    expect(tableCarriesKeys([table[0]])).toBe(false);
    expect(tableCarriesKeys([{ type: 'integrity' }])).toBe(true);
  });
});

/** The fake system's binding, with its control's ioctls recorded and a crypt table in place of the real ones. */
function recordingBinding(system: FakeSystem, calls: { op: string; flags: number }[]): NativeBinding {
  const cryptLine = { start: 0, length: 8, type: 'crypt', params: `aes-xts-plain64 ${KEY} 0 7:0 0` };
  return {
    ...system.binding,
    async openControl(path: string): Promise<NativeControl> {
      const control = await system.binding.openControl(path);
      return new Proxy(control, {
        get(target, key, receiver) {
          if (key === 'load') {
            return (ref: never, targets: never, flags: number) => {
              calls.push({ op: 'load', flags });
              return target.load(ref, targets, flags);
            };
          }
          if (key === 'tableStatus') {
            return async (ref: never, flags: number) => {
              calls.push({ op: 'tableStatus', flags });
              const result = await target.tableStatus(ref, flags);
              return { ...result, targets: [cryptLine] };
            };
          }
          return Reflect.get(target, key, receiver);
        },
      });
    },
  };
}

describe('DM_SECURE_DATA_FLAG and the CLI', () => {
  let system: FakeSystem;
  let calls: { op: string; flags: number }[];
  let binding: NativeBinding;
  let SECURE: number;
  let nodes: { devDir: string; remove(): void };

  afterEach(() => nodes.remove());

  beforeEach(() => {
    system = createFakeSystem();
    nodes = fakeNodeDirectory(system);
    calls = [];
    binding = recordingBinding(system, calls);
    SECURE = system.constants.DM_SECURE_DATA_FLAG;
  });

  it('goes with loads of tables that hold keys (not others) and with every table and status query', async () => {
    using dm = await DeviceMapper.open({ binding, udev: false, devDir: nodes.devDir });
    await dm.create('k');
    await dm.load('k', '0 8 zero');
    const refused = await dm.load('k', `0 8 crypt aes-xts-plain64 ${KEY} 0 /dev/loop0 0`).catch((e: Error) => e);
    // The fake has no crypt target: the kernel's refusal names the table, with the key hidden.
    expect(refused).toBeInstanceOf(Error);
    expect((refused as Error).message).toContain(`crypt aes-xts-plain64 ${ZEROS}`);
    expect((refused as Error).message).not.toContain(KEY);
    await dm.table('k');
    await dm.status('k');
    expect(calls.map((c) => [c.op, (c.flags & SECURE) !== 0])).toEqual([
      ['load', false],
      ['load', true],
      ['tableStatus', true],
      ['tableStatus', true],
    ]);
  });

  async function cli(argv: string[]) {
    const stdout = new PassThrough();
    let out = '';
    stdout.on('data', (d) => (out += d));
    const code = await main(argv, { stdout, stderr: new PassThrough(), stdin: new PassThrough(), binding });
    return { code, out };
  }

  it('dm table masks keys unless --showkeys, in plain and JSON output; dm status does not touch params', async () => {
    using dm = await DeviceMapper.open({ binding, udev: false, devDir: nodes.devDir });
    await dm.create('k', { table: '0 8 zero' });
    expect(await cli(['dm', 'table', 'k'])).toEqual({ code: 0, out: `0 8 crypt aes-xts-plain64 ${ZEROS} 0 7:0 0\n` });
    expect(await cli(['dm', 'table'])).toEqual({ code: 0, out: `k: 0 8 crypt aes-xts-plain64 ${ZEROS} 0 7:0 0\n` });
    expect(await cli(['dm', 'table', 'k', '--showkeys'])).toEqual({ code: 0, out: `0 8 crypt aes-xts-plain64 ${KEY} 0 7:0 0\n` });
    const json = await cli(['dm', 'table', 'k', '--json']);
    expect(JSON.parse(json.out).devices[0].targets[0].params).toBe(`aes-xts-plain64 ${ZEROS} 0 7:0 0`);
    const shown = await cli(['dm', 'table', 'k', '--json', '--showkeys']);
    expect(JSON.parse(shown.out).devices[0].targets[0].params).toBe(`aes-xts-plain64 ${KEY} 0 7:0 0`);
    // dmsetup masks only tables: the status line is printed as the kernel gives it.
    expect((await cli(['dm', 'status', 'k'])).out).toBe(`0 8 crypt aes-xts-plain64 ${KEY} 0 7:0 0\n`);
    expect((await cli(['dm', 'status', 'k', '--showkeys'])).code).toBe(2);
  });
});
