// Unit tests: run on the host with ts-jest, against the fake binding (and the real
// addon where no device-mapper is needed). The VM suite has its own config.
/** @type {import('jest').Config} */
module.exports = {
  displayName: 'unit',
  testEnvironment: 'node',
  roots: ['<rootDir>/test/unit'],
  testMatch: ['**/*.test.ts'],
  // Without a compiled addon, names the fake's guardian (test/support/unit-setup.ts).
  setupFiles: ['<rootDir>/test/support/unit-setup.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }] },
};
