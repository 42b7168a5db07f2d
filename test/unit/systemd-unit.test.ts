/**
 * The boot unit that prepares origins before local filesystems mount: systemd itself
 * must accept it (systemd-analyze verify, from Debian's systemd package).
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const unit = join(__dirname, '../../systemd/dmsnap-prepare@.service');
const hasAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;

(hasAnalyze ? describe : describe.skip)('systemd unit dmsnap-prepare@.service (needs systemd-analyze)', () => {
  function verify(text?: string) {
    const dir = mkdtempSync(join(tmpdir(), 'dmsnap-unit-'));
    try {
      if (text === undefined) copyFileSync(unit, join(dir, 'dmsnap-prepare@.service'));
      else require('node:fs').writeFileSync(join(dir, 'dmsnap-prepare@.service'), text);
      return spawnSync('systemd-analyze', ['verify', '--man=no', './dmsnap-prepare@dev-md2.service'], { cwd: dir, encoding: 'utf8' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it('passes systemd-analyze verify without a warning', () => {
    const result = verify();
    expect({ status: result.status, stderr: result.stderr }).toEqual({ status: 0, stderr: '' });
  });

  it('is a check that can fail', () => {
    const broken = readFileSync(unit, 'utf8').replace('/usr/bin/env dmsnap', '/usr/bin/dmsnap-not-installed');
    expect(verify(broken).status).not.toBe(0);
  });

  it('runs before local filesystems, for the device its instance names', () => {
    const text = readFileSync(unit, 'utf8');
    expect(text).toMatch(/^Before=local-fs-pre\.target/m);
    expect(text).toMatch(/^DefaultDependencies=no$/m);
    expect(text).toMatch(/^ExecStart=\/usr\/bin\/env dmsnap prepare %f --quiet \$DMSNAP_PREPARE_ARGS$/m);
  });

  it('detaches the origin when it stops (after the filesystem is unmounted at shutdown), and attaches what its configuration names', () => {
    const text = readFileSync(unit, 'utf8');
    expect(text).toMatch(/^ExecStop=\/usr\/bin\/env dmsnap detach %f --quiet$/m);
    expect(text).toMatch(/^EnvironmentFile=-\/etc\/dmsnap\/%i\.conf$/m);
    expect(text).toMatch(/^Conflicts=shutdown\.target$/m);
  });
});

const monitorUnit = join(__dirname, '../../systemd/dmsnap-monitor.service');

(hasAnalyze ? describe : describe.skip)('systemd unit dmsnap-monitor.service (needs systemd-analyze)', () => {
  function verify(text: string) {
    const dir = mkdtempSync(join(tmpdir(), 'dmsnap-unit-'));
    try {
      require('node:fs').writeFileSync(join(dir, 'dmsnap-monitor.service'), text);
      return spawnSync('systemd-analyze', ['verify', '--man=no', './dmsnap-monitor.service'], { cwd: dir, encoding: 'utf8' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it('passes systemd-analyze verify without a warning, and the check can fail', () => {
    const text = readFileSync(monitorUnit, 'utf8');
    expect(verify(text)).toMatchObject({ status: 0, stderr: '' });
    expect(verify(text.replace('Type=simple', 'Type=not-a-type')).stderr).not.toBe('');
  });

  it('runs dmsnap monitor, stopped by SIGTERM', () => {
    const text = readFileSync(monitorUnit, 'utf8');
    expect(text).toMatch(/^ExecStart=\/usr\/bin\/env dmsnap monitor /m);
    expect(text).toMatch(/^KillSignal=SIGTERM$/m);
  });
});
