/**
 * Test seams and build overrides are honoured in a source checkout only: an installed
 * package (no test/ beside it) ignores them.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { transpileModule, ModuleKind } from 'typescript';
import { devOverride, isSourceCheckout } from '../../lib/dev-overrides';

describe('development overrides', () => {
  const saved = { ...process.env };
  afterEach(() => {
    process.env = { ...saved };
  });

  it('are honoured in this checkout', () => {
    process.env.DMSNAP_GUARDIAN = '/somewhere/dmsnap-guardian';
    expect(isSourceCheckout()).toBe(true);
    expect(devOverride('DMSNAP_GUARDIAN')).toBe('/somewhere/dmsnap-guardian');
  });

  it('are ignored by an installed package, which ships no test suite', () => {
    const root = mkdtempSync(join(tmpdir(), 'dmsnap-installed-'));
    try {
      writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'dmsnap', version: '0.0.0' }));
      mkdirSync(join(root, 'dist', 'lib'), { recursive: true });
      const source = readFileSync(join(__dirname, '../../lib/dev-overrides.ts'), 'utf8');
      writeFileSync(join(root, 'dist/lib/dev-overrides.js'), transpileModule(source, { compilerOptions: { module: ModuleKind.CommonJS } }).outputText);
      process.env.DMSNAP_TEST_SEAMS = '1';
      process.env.DMSNAP_ADDON = '/tmp/evil.node';
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const installed = require(join(root, 'dist/lib/dev-overrides.js')) as typeof import('../../lib/dev-overrides');
      expect(installed.isSourceCheckout()).toBe(false);
      expect(installed.devOverride('DMSNAP_TEST_SEAMS')).toBeUndefined();
      expect(installed.devOverride('DMSNAP_ADDON')).toBeUndefined();
      // Once a test suite is beside it, it is a checkout.
      mkdirSync(join(root, 'test', 'support'), { recursive: true });
      jest.resetModules();
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const checkout = require(join(root, 'dist/lib/dev-overrides.js')) as typeof import('../../lib/dev-overrides');
      expect(checkout.devOverride('DMSNAP_ADDON')).toBe('/tmp/evil.node');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
