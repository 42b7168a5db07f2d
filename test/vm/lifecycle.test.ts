/**
 * The shared lifecycle suite against the real kernel.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DeviceMapper } from '../../lib';
import { loadBinding } from '../../lib/native';
import { lifecycleSuite } from '../shared/lifecycle.suite';
import { createLoopDevice } from './support/system';

lifecycleSuite({
  openClient: (wrap) => DeviceMapper.open(wrap ? { binding: wrap(loadBinding()) } : {}),
  async makeAlias(target) {
    const dir = mkdtempSync('/tmp/dmsnap-alias-');
    const path = `${dir}/cow`;
    symlinkSync(target, path);
    let n = 0;
    return {
      path,
      repoint(to) {
        const next = `${dir}/next${n++}`;
        symlinkSync(to, next);
        renameSync(next, path);
      },
    };
  },
  makeBlockDevice: async (sizeBytes) => createLoopDevice(sizeBytes),
  async writeThrough(devicePath, bytes, offsetBytes = 0) {
    const blockSize = 64 * 1024;
    execFileSync('dd', [
      'if=/dev/urandom',
      `of=${devicePath}`,
      `bs=${blockSize}`,
      `count=${Math.ceil(bytes / blockSize)}`,
      `seek=${Math.floor(offsetBytes / blockSize)}`,
      'oflag=direct',
      'conv=notrunc',
      'status=none',
    ]);
  },
  async formatExt4(path) {
    // 4 MiB of it: the tests' raw writes through the origin, further on, leave it intact.
    execFileSync('mkfs.ext4', ['-q', '-F', path, '4M']);
  },
  async writeFilesystem(path) {
    const dir = mkdtempSync('/tmp/dmsnap-rw-');
    execFileSync('mount', [path, dir]);
    try {
      writeFileSync(join(dir, 'written-while-detached'), 'x'.repeat(4096));
    } finally {
      execFileSync('umount', [dir]);
    }
  },
  lockDir: mkdtempSync('/tmp/dmsnap-locks-'),
  runningGuardians: () => childCommands().filter((command) => command === 'dmsnap-guardian').length,
});

/** The command names of this process's children, zombies included (until waited for). */
function childCommands(): string[] {
  const pids = readdirSync('/proc/self/task').flatMap((tid) =>
    readFileSync(`/proc/self/task/${tid}/children`, 'utf8').split(' ').filter(Boolean),
  );
  return pids.flatMap((pid) => {
    try {
      return [readFileSync(`/proc/${pid}/comm`, 'utf8').trim()];
    } catch {
      return []; // gone meanwhile
    }
  });
}
