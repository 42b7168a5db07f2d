/**
 * The monitor against the fake kernel: snapshots found at each pass (also those taken
 * while it runs), state changes, autoextend of COW files, metrics in the textfile
 * collector's format, and a clean stop. The kernel's side is in test/vm/monitor.test.ts.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceMapper, monitor, prepare, type MonitorEvent } from '../../lib';
import { metricsText } from '../../lib/snapshot/metrics';
import { createFakeSystem, fakeNodeDirectory, type FakeSystem } from '../support/fake-binding';

const MiB = 1024 * 1024;
let system: FakeSystem;
let nodes: { devDir: string; remove(): void };
let dm: DeviceMapper;
let lockDir: string;
let dir: string;

beforeEach(async () => {
  system = createFakeSystem();
  nodes = fakeNodeDirectory(system);
  lockDir = mkdtempSync(join(tmpdir(), 'dmsnap-locks-'));
  dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'dmsnap-monitor-'));
  dm = await DeviceMapper.open({ binding: system.binding, devDir: nodes.devDir, udev: false });
});

afterEach(() => {
  dm.close();
  nodes.remove();
  rmSync(lockDir, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
});

const until = async (what: () => boolean, ms = 3000) => {
  for (let waited = 0; !what(); waited += 5) {
    if (waited > ms) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('dmsnap monitor (library)', () => {
  it('picks up snapshots taken while it runs, grows their COW files, reports changes and writes metrics', async () => {
    const origin = await prepare(system.addLoopDevice(8 * MiB), { dm, lockDir, name: 'mon' });
    const events: MonitorEvent[] = [];
    const stop = new AbortController();
    const metricsPath = join(dir, 'dmsnap.prom');
    const running = monitor({ dm, lockDir, intervalMs: 5, autoextend: { thresholdPercent: 60, stepPercent: 50 }, metricsPath, signal: stop.signal, onEvent: (e) => events.push(e) });
    await until(() => existsSync(metricsPath));
    const path = join(dir, 'mon.cow');
    const snap = await origin.snapshot({ cowFile: { path, sizeBytes: 1 * MiB } });
    await until(() => events.some((e) => e.kind === 'found'));
    system.writeOrigin(origin.name, 1400); // ~700 KiB of 1 MiB
    await until(() => events.some((e) => e.kind === 'extended'));
    expect(statSync(path).size).toBeGreaterThan(1 * MiB);
    expect((await snap.status()).state).toBe('active');
    await until(() => readFileSync(metricsPath, 'utf8').includes('dmsnap_cow_file_host_free_ratio{origin="mon"'));
    const metrics = readFileSync(metricsPath, 'utf8');
    expect(metrics).toContain(`dmsnap_snapshot_state{origin="mon",snapshot="${snap.name}",state="active"} 1`);
    expect(metrics).toMatch(/dmsnap_snapshot_age_seconds\{origin="mon",snapshot="mon-snap"\} \d/);
    await snap.drop();
    await until(() => events.some((e) => e.kind === 'gone'));
    stop.abort();
    await running;
    expect(events.map((e) => e.kind).filter((k, i, all) => all.indexOf(k) === i)).toEqual(['found', 'extended', 'gone']);
    expect(events.find((e) => e.kind === 'found')).toMatchObject({ origin: 'mon', snapshot: 'mon-snap', state: 'active', cowFile: path });
  });

  it('reports a snapshot that becomes invalid', async () => {
    const origin = await prepare(system.addLoopDevice(8 * MiB), { dm, lockDir, name: 'inv' });
    const snap = await origin.snapshot({ cow: system.addLoopDevice(128 * 1024) });
    const events: MonitorEvent[] = [];
    const stop = new AbortController();
    const running = monitor({ dm, lockDir, intervalMs: 5, signal: stop.signal, onEvent: (e) => events.push(e) });
    await until(() => events.length > 0);
    system.writeOrigin(origin.name, 4096);
    await until(() => events.some((e) => e.kind === 'state'));
    stop.abort();
    await running;
    expect(events.find((e) => e.kind === 'state')).toEqual({ kind: 'state', origin: 'inv', snapshot: snap.name, state: 'invalid', previous: 'active' });
    await snap.drop();
  });
});

describe('metrics text', () => {
  it('is the Prometheus text format, with escaped labels and no usage for an invalid snapshot', () => {
    const none = { allocatedSectors: null, totalSectors: null, metadataSectors: null, dataSectors: null, usedPercent: null };
    const text = metricsText(
      [{ origin: 'a"b', snapshot: 's\\1', status: { name: 's', device: '/dev/mapper/s', state: 'invalid', ...none }, createdAt: null }],
      1_700_000_000_000,
    );
    expect(text).toContain('dmsnap_snapshot_state{origin="a\\"b",snapshot="s\\\\1",state="invalid"} 1');
    expect(text).not.toContain('dmsnap_snapshot_cow_used_ratio{');
    expect(text).toContain('dmsnap_monitor_last_pass_timestamp_seconds 1700000000');
    expect(text.endsWith('\n')).toBe(true);
    for (const line of text.trim().split('\n')) expect(line).toMatch(/^(# (HELP|TYPE) \S+ .+|[a-z_]+(\{.*\})? [0-9.e+-]+)$/);
  });
});
