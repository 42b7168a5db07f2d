/**
 * /dev/mapper nodes under udev: a block node dmsnap made itself (udev did not answer in
 * time when the device was created) must go with its device, even when udev confirms the
 * remove, since udev removes only the links it made.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeSync } from '../../lib/dm/udev';
import { createFakeSystem } from '../support/fake-binding';

const asRoot = process.getuid?.() === 0;
let devDir: string;

beforeEach(() => {
  devDir = mkdtempSync(join(tmpdir(), 'dmsnap-udev-nodes-'));
});
afterEach(() => rmSync(devDir, { recursive: true, force: true }));

(asRoot ? describe : describe.skip)('removing a node when udev confirmed the remove', () => {
  const sync = () => new NodeSync(createFakeSystem().binding, { udev: true, devDir });

  it("removes dmsnap's own block node of the removed device", async () => {
    execFileSync('mknod', [join(devDir, 'gone'), 'b', '7', '200']);
    await sync().removeNode('gone', true, { major: 7, minor: 200 });
    expect(existsSync(join(devDir, 'gone'))).toBe(false);
  });

  it("leaves udev's link, and a block node of another device", async () => {
    symlinkSync('../dm-3', join(devDir, 'link'));
    execFileSync('mknod', [join(devDir, 'other'), 'b', '7', '201']);
    await sync().removeNode('link', true, { major: 253, minor: 3 });
    await sync().removeNode('other', true, { major: 7, minor: 200 });
    expect(lstatSync(join(devDir, 'link')).isSymbolicLink()).toBe(true);
    expect(lstatSync(join(devDir, 'other')).isBlockDevice()).toBe(true);
  });
});
