/**
 * The shared basics suite against the real addon and kernel, plus what only a real
 * kernel can show: agreement with dmsetup and blockdev, and permission errors.
 */
import { basicsSuite } from '../shared/basics.suite';
import { blockDeviceInfo, DeviceMapper } from '../../lib';
import { loadBinding } from '../../lib/native';
import { createLoopDevice, run, runAsNobody } from './support/system';

basicsSuite({
  binding: () => loadBinding(),
  async makeBlockDevice(sizeBytes, options) {
    return createLoopDevice(sizeBytes, { sectorSize: options?.logicalSectorSize });
  },
  notABlockDevice: '/dev/null',
});

describe('against the tools of the system', () => {
  it('reports the same driver version as dmsetup', async () => {
    using dm = await DeviceMapper.open();
    const version = await dm.version();
    const dmsetup = run('dmsetup', ['version']);
    expect(dmsetup).toContain(`Driver version:    ${version.text}`);
  });

  it('reports the same size and sector size as blockdev', async () => {
    const path = createLoopDevice(3 * 1024 * 1024 + 512 * 7);
    const info = await blockDeviceInfo(path);
    expect(info.sizeBytes).toBe(Number(run('blockdev', ['--getsize64', path]).trim()));
    expect(info.sizeSectors).toBe(Number(run('blockdev', ['--getsz', path]).trim()));
    expect(info.logicalSectorSize).toBe(Number(run('blockdev', ['--getss', path]).trim()));
    expect(info.physicalSectorSize).toBe(Number(run('blockdev', ['--getpbsz', path]).trim()));
  });

  it('reports a read-only loop device as read-only', async () => {
    const path = createLoopDevice(1024 * 1024);
    run('blockdev', ['--setro', path]);
    expect((await blockDeviceInfo(path)).readOnly).toBe(true);
  });
});

describe('as an unprivileged user', () => {
  const probe = (call: string) =>
    JSON.parse(
      runAsNobody(
        `const d = require(${JSON.stringify(process.cwd() + '/dist/lib')});` +
          `(${call})(d).then(() => console.log('{}'), (e) => console.log(JSON.stringify({ code: e.code, name: e.name, message: e.message })));`,
      ),
    );

  it('fails to open the control node with EACCES and says to run as root', () => {
    const result = probe('(d) => d.DeviceMapper.open()');
    expect(result).toMatchObject({ code: 'EACCES', name: 'SyscallError' });
    expect(result.message).toMatch(/run as root/);
  });

  it('fails to query a root-only block device with EACCES', () => {
    const path = createLoopDevice(1024 * 1024);
    const result = probe(`(d) => d.blockDeviceInfo(${JSON.stringify(path)})`);
    expect(result).toMatchObject({ code: 'EACCES' });
  });
});
