import { cowLabel, signalExitCode } from '../../lib/cli/format';

describe('signalExitCode', () => {
  it('is 128 + the signal number, as a shell reports a program that a signal ended', () => {
    expect(signalExitCode('SIGHUP')).toBe(129);
    expect(signalExitCode('SIGINT')).toBe(130);
    expect(signalExitCode('SIGKILL')).toBe(137);
    expect(signalExitCode('SIGSEGV')).toBe(139);
    expect(signalExitCode('SIGTERM')).toBe(143);
  });

  it('is a plain failure for a signal name the platform does not have', () => {
    expect(signalExitCode('SIGNOSUCH' as NodeJS.Signals)).toBe(1);
  });
});

describe('cowLabel', () => {
  it('is the COW path, or MAJOR:MINOR when sysfs does not name it', () => {
    expect(cowLabel({ cowDevice: { major: 7, minor: 1, path: '/dev/loop1' } })).toBe('/dev/loop1');
    expect(cowLabel({ cowDevice: { major: 7, minor: 1, path: null } })).toBe('7:1');
  });
});
