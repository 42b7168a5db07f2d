/**
 * dmsnap against dmsetup, a peer no one here wrote: devices made by either are read the
 * same by both, plain output matches byte for byte, and /dev/mapper nodes behave as
 * with libdevmapper, with and without udev.
 */
import { lstat, readlink } from 'node:fs/promises';
import { execFileSync, spawnSync } from 'node:child_process';
import { DeviceMapper, UdevFlags, linear, sectors, snapshot, snapshotOrigin } from '../../lib';
import { cli, createLoopDevice, dmsetup, dmsetupState, run, runAsNobody, withUdev } from './support/system';

const prefix = `dmsnap-x${process.pid}-`;
let dm: DeviceMapper;

beforeAll(async () => {
  dm = await DeviceMapper.open();
});

afterEach(async () => {
  const ours = (await dm.list()).filter((d) => d.name.startsWith(prefix));
  for (const d of ours) if ((await dm.info(d.name)).suspended) await dm.resume(d.name);
  for (let round = 0; round < 3; round++) {
    for (const d of (await dm.list()).filter((x) => x.name.startsWith(prefix))) {
      await dm.remove(d.name, { retry: false }).catch(() => undefined);
    }
  }
  // dmsetup without udev leaves its nodes to `dmsetup mknodes`, which also prunes stale ones.
  if (!withUdev) dmsetup('mknodes');
});

afterAll(() => dm.close());

/** A small zoo of devices: linear, multi-target, a snapshot stack. Returns their names. */
async function buildZoo(make: (name: string, table: string) => Promise<void>): Promise<string[]> {
  const origin = createLoopDevice(16 * 1024 * 1024);
  const cow = createLoopDevice(4 * 1024 * 1024);
  const size = 32768;
  const names = {
    wrapper: `${prefix}w`,
    real: `${prefix}w-real`,
    snap: `${prefix}w-snap`,
    multi: `${prefix}multi`,
  };
  await make(names.wrapper, `0 ${size} linear ${origin} 0`);
  await make(names.real, `0 ${size} linear ${origin} 0`);
  await make(names.multi, `0 8 zero\n8 16 error\n24 100 linear ${origin} 2048`);
  await dm.suspend(names.wrapper);
  await make(names.snap, `0 ${size} snapshot /dev/mapper/${names.real} ${cow} P 32`);
  await dm.load(names.wrapper, `0 ${size} snapshot-origin /dev/mapper/${names.real}`);
  await dm.resume(names.wrapper);
  // Some writes through the origin, so that the snapshot has usage to report.
  execFileSync('dd', ['if=/dev/urandom', `of=/dev/mapper/${names.wrapper}`, 'bs=64k', 'count=16', 'oflag=direct', 'status=none']);
  return Object.values(names);
}

describe('cross-checks with dmsetup', () => {
  it('dmsetup reads devices that dmsnap made exactly as dmsnap prints them', async () => {
    const names = await buildZoo(async (name, table) => {
      await dm.create(name, { table });
    });
    for (const name of names) {
      for (const kind of ['table', 'status'] as const) {
        const ours = cli(['dm', kind, name]);
        expect(ours.status).toBe(0);
        expect(ours.stdout).toBe(dmsetup(kind, name));
      }
      const deps = cli(['dm', 'deps', name]);
      expect(deps.stdout.split(':')[0]).toBe(dmsetup('deps', name).split(':')[0]);
      const info = cli(['dm', 'info', name]);
      expect(info.stdout).toBe(dmsetup('info', name));
    }
    // dmsetup prints the kernel's order (sorted by name since the kernel keeps its devices
    // in a tree; older kernels such as 5.10 list them in hash order); dmsnap sorts by name.
    const ls = cli(['dm', 'ls']).stdout.split('\n').filter((l) => l.startsWith(prefix));
    expect(ls).toEqual(dmsetup('ls').split('\n').filter((l) => l.startsWith(prefix)).sort());
  });

  it('dmsnap reads devices that dmsetup made exactly as dmsetup prints them', async () => {
    const names = await buildZoo(async (name, table) => {
      run('dmsetup', ['create', name], { input: `${table}\n` });
      if (!withUdev) dmsetup('mknodes', name);
    });
    for (const name of names) {
      expect(cli(['dm', 'table', name]).stdout).toBe(dmsetup('table', name));
      expect(cli(['dm', 'status', name]).stdout).toBe(dmsetup('status', name));
      const info = await dm.info(name);
      const columns = dmsetup('info', '-c', '--noheadings', '--separator', ' ', '-o', 'major,minor,open,segments,events', name).trim();
      expect(`${info.major} ${info.minor} ${info.openCount} ${info.targetCount} ${info.eventNr}`).toBe(columns);
    }
    const json = JSON.parse(cli(['dm', 'status', `${prefix}w-snap`, '--json']).stdout);
    expect(json.devices[0].targets[0]).toMatchObject({ start: 0, length: 32768, type: 'snapshot' });
    expect(json.devices[0].targets[0].params).toMatch(/^\d+\/8192 \d+$/);
  });

  it('agrees with dmsetup on the target versions', async () => {
    const ours = cli(['dm', 'targets']).stdout.split('\n').sort();
    expect(ours).toEqual(dmsetup('targets').split('\n').sort());
  });

  it('uses the udev flags that libdevmapper defines', () => {
    const decoded = dmsetup('udevflags', String(((UdevFlags.primarySource | UdevFlags.disableLibraryFallback | UdevFlags.disableDiskRules) << 16) | 1));
    expect(decoded.trim().split('\n').sort()).toEqual(
      ["DM_UDEV_DISABLE_DISK_RULES_FLAG='1'", "DM_UDEV_DISABLE_LIBRARY_FALLBACK_FLAG='1'", "DM_UDEV_PRIMARY_SOURCE_FLAG='1'"].sort(),
    );
    for (const [flag, name] of [
      [UdevFlags.disableDmRules, 'DM_UDEV_DISABLE_DM_RULES_FLAG'],
      [UdevFlags.disableSubsystemRules, 'DM_UDEV_DISABLE_SUBSYSTEM_RULES_FLAG'],
      [UdevFlags.disableOtherRules, 'DM_UDEV_DISABLE_OTHER_RULES_FLAG'],
      [UdevFlags.lowPriority, 'DM_UDEV_LOW_PRIORITY_FLAG'],
    ] as const) {
      expect(dmsetup('udevflags', String((flag << 16) | 1)).trim()).toBe(`${name}='1'`);
    }
  });
});

describe('the device list and uuids (interface 4.45 lists them; 5.10 has 4.43, whose list does not)', () => {
  /** name → uuid ('' for none) of our devices, as `dmsetup info` prints them. */
  function dmsetupUuids(): Map<string, string> {
    const lines = dmsetup('info', '-c', '--noheadings', '--separator', ' ', '-o', 'name,uuid').split('\n');
    const ours = lines.filter((l) => l.startsWith(prefix)).map((l) => l.split(' ') as [string, string?]);
    return new Map(ours.map(([name, uuid]) => [name, uuid ?? '']));
  }

  it('list() and `dm ls --json` give every device the uuid dmsetup shows', async () => {
    await dm.create(`${prefix}u1`, { uuid: `${prefix}uuid-1`, table: '0 8 zero' });
    await dm.create(`${prefix}u0`, { table: '0 8 zero' });
    run('dmsetup', ['create', `${prefix}u2`, '--uuid', `${prefix}uuid-2`], { input: '0 8 zero\n' });
    if (!withUdev) dmsetup('mknodes', `${prefix}u2`);
    const expected = dmsetupUuids();
    expect([...expected.values()].sort()).toEqual(['', `${prefix}uuid-1`, `${prefix}uuid-2`]);

    const listed = (await dm.list()).filter((d) => d.name.startsWith(prefix));
    expect(new Map(listed.map((d) => [d.name, d.uuid ?? '']))).toEqual(expected);
    const json = JSON.parse(cli(['dm', 'ls', '--json']).stdout) as { devices: { name: string; uuid: string | null }[] };
    const cliListed = json.devices.filter((d) => d.name.startsWith(prefix));
    expect(new Map(cliListed.map((d) => [d.name, d.uuid ?? '']))).toEqual(expected);
  });

  it('`dmsnap ls --json` and `status` find a prepared origin, and a second prepare reuses it', () => {
    const disk = createLoopDevice(16 * 1024 * 1024);
    const name = `${prefix}origin`;
    expect(cli(['prepare', disk, '--name', name])).toMatchObject({ status: 0, stdout: `/dev/mapper/${name}\n` });
    let released: ReturnType<typeof cli> | undefined;
    try {
      const uuids = dmsetupUuids();
      expect(uuids.get(name)).toMatch(/^DMSNAP-/);
      const ls = JSON.parse(cli(['ls', '--json']).stdout) as { origins: { name: string; backing: string }[] };
      expect(ls.origins.filter((o) => o.name === name)).toEqual([expect.objectContaining({ name, backing: disk })]);
      const status = cli(['status', name, '--json']);
      expect(status.status).toBe(0);
      expect(JSON.parse(status.stdout).origins).toEqual([expect.objectContaining({ name, device: `/dev/mapper/${name}`, backing: disk })]);
      expect(cli(['prepare', disk, '--name', name])).toMatchObject({ status: 0, stdout: `/dev/mapper/${name}\n` });
    } finally {
      released = cli(['release', name]);
    }
    expect(released).toMatchObject({ status: 0, stderr: '' });
    expect(dmsetupUuids().has(name)).toBe(false);
  });
});

describe('/dev/mapper nodes', () => {
  it(`exist after create and are gone after remove (${withUdev ? 'udev makes links' : 'dmsnap makes block nodes'})`, async () => {
    const name = `${prefix}node`;
    const info = await dm.create(name, { table: '0 8 zero' });
    const stats = await lstat(`/dev/mapper/${name}`);
    if (withUdev) {
      expect(dm.udev).toBe(true);
      expect(stats.isSymbolicLink()).toBe(true);
      expect(await readlink(`/dev/mapper/${name}`)).toBe(`../dm-${info.minor}`);
    } else {
      expect(dm.udev).toBe(false);
      expect(stats.isBlockDevice()).toBe(true);
      expect(stats.mode & 0o777).toBe(0o600);
    }
    expect(run('blockdev', ['--getsz', `/dev/mapper/${name}`]).trim()).toBe('8');
    const renamed = `${prefix}node2`;
    await dm.rename(name, renamed);
    await expect(lstat(`/dev/mapper/${name}`)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(run('blockdev', ['--getsz', `/dev/mapper/${renamed}`]).trim()).toBe('8');
    await dm.remove(renamed);
    await expect(lstat(`/dev/mapper/${renamed}`)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('leaves no udev cookie semaphores behind', async () => {
    const before = run('ipcs', ['-s']);
    const name = `${prefix}cookie`;
    await dm.create(name, { table: '0 8 zero' });
    await dm.remove(name);
    expect(run('ipcs', ['-s'])).toBe(before);
  });
});

describe('many devices', () => {
  it('lists 600 devices with long names (more than the first buffer holds)', async () => {
    const names = Array.from({ length: 600 }, (_, i) => `${prefix}${String(i).padStart(4, '0')}-${'x'.repeat(100)}`);
    for (const name of names) await dm.create(name, { uuid: `${name.slice(0, 60)}-uuid` });
    const listed = (await dm.list()).filter((d) => d.name.startsWith(prefix));
    expect(listed.map((d) => d.name)).toEqual(names);
    expect(listed.every((d, i) => d.uuid === `${names[i].slice(0, 60)}-uuid`)).toBe(true);
    const dmsetupNames = dmsetup('ls').split('\n').filter((l) => l.startsWith(prefix));
    expect(dmsetupNames.length).toBe(600);
  }, 600_000);
});

describe('refusals leave the device-mapper state unchanged', () => {
  it('refuses to remove a mounted device (EBUSY, exit 4) and keeps it', async () => {
    const backing = createLoopDevice(32 * 1024 * 1024);
    const name = `${prefix}mounted`;
    await dm.create(name, { table: [linear({ length: sectors(65536), device: backing })] });
    run('mkfs.ext4', ['-q', `/dev/mapper/${name}`]);
    const dir = run('mktemp', ['-d']).trim();
    run('mount', [`/dev/mapper/${name}`, dir]);
    try {
      const before = dmsetupState();
      const result = cli(['dm', 'remove', name]);
      expect(result.status).toBe(4);
      expect(result.stderr).toMatch(/EBUSY.*in use/);
      expect(result.stdout).toBe('');
      await expect(dm.remove(name, { retry: false })).rejects.toMatchObject({ code: 'EBUSY' });
      expect(dmsetupState()).toBe(before);
    } finally {
      run('umount', [dir]);
    }
  });

  it('reports a table naming a non-block file and changes nothing', async () => {
    const before = dmsetupState();
    const result = cli(['dm', 'create', `${prefix}notblock`, '--table', '0 8 linear /etc/passwd 0']);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/DM_TABLE_LOAD/);
    expect(dmsetupState()).toBe(before);
  });

  it('refuses a non-root caller with EACCES and changes nothing', async () => {
    const before = dmsetupState();
    const out = runAsNobody(
      `const { DeviceMapper } = require(${JSON.stringify(process.cwd() + '/dist/lib')});` +
        `DeviceMapper.open().then(() => console.log('opened'), (e) => console.log(e.code));`,
    );
    expect(out.trim()).toBe('EACCES');
    const result = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, 'dist/dmsnap.js', 'dm', 'create', `${prefix}nobody`, '--table', '0 8 zero'], { encoding: 'utf8' });
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/run as root/);
    expect(dmsetupState()).toBe(before);
  });
});

describe('snapshot helpers against the kernel', () => {
  it('builds tables the kernel accepts and prints back unchanged', async () => {
    const origin = createLoopDevice(8 * 1024 * 1024);
    const cow = createLoopDevice(2 * 1024 * 1024);
    const real = `${prefix}h-real`;
    const wrap = `${prefix}h`;
    const snap = `${prefix}h-snap`;
    const size = sectors(16384);
    await dm.create(real, { table: [linear({ length: size, device: origin })] });
    await dm.create(wrap, { table: [snapshotOrigin({ length: size, origin: `/dev/mapper/${real}` })] });
    await dm.create(snap, { table: [snapshot({ length: size, origin: `/dev/mapper/${real}`, cow, chunkSectors: sectors(16), persistent: false })] });
    const table = await dm.table(snap);
    expect(dmsetup('table', snap)).toBe(`0 16384 snapshot ${table[0].params.split(' ')[0]} ${table[0].params.split(' ')[1]} N 16\n`);
  });
});
