// The VM suite: runs as root inside the VM test bed (scripts/vm), on the JavaScript
// that `npm run build:ts` compiled on the host (no TypeScript compiler in the guest,
// where JIT-heavy work is many times slower).
const kernel = process.env.DMSNAP_VM_KERNEL || '?';
const udev = process.env.DMSNAP_VM_UDEV === '1' ? 'udev' : 'no udev';

/** @type {import('jest').Config} */
module.exports = {
  displayName: `vm ${kernel} ${udev}`,
  rootDir: __dirname,
  testEnvironment: 'node',
  roots: ['<rootDir>/dist/test/vm'],
  testMatch: ['**/*.test.js'],
  transform: {},
  watchman: false,
  cacheDirectory: '/tmp/jest-vm-cache',
  maxWorkers: 1,
  testTimeout: 300000,
  setupFilesAfterEnv: ['<rootDir>/dist/test/vm/support/leak-check.js'],
};
