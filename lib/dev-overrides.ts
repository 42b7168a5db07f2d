/**
 * What only a source checkout of dmsnap honours: the test seams (DMSNAP_TEST_SEAMS with
 * DMSNAP_TEST_FAIL_AFTER / DMSNAP_TEST_KILL_AFTER), and builds named by DMSNAP_ADDON and
 * DMSNAP_GUARDIAN. A checkout is a package directory that holds the test suite (`test/`),
 * which the published package never ships: an installed dmsnap ignores these variables, so
 * an environment passed down to a root process cannot swap its addon or guardian, nor make
 * it stop half-way.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

let checkout: boolean | undefined;

/** The directory of dmsnap's package.json, above this file (dist/lib or the bundle's dist). */
function packageRoot(): string | undefined {
  for (let dir = __dirname; ; dir = dirname(dir)) {
    try {
      if ((JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string }).name === 'dmsnap') return dir;
    } catch {
      // no package.json here
    }
    if (dirname(dir) === dir) return undefined;
  }
}

/** Whether this dmsnap runs from a source checkout (see above). */
export function isSourceCheckout(): boolean {
  if (checkout === undefined) {
    const root = packageRoot();
    checkout = root !== undefined && existsSync(join(root, 'test', 'support'));
  }
  return checkout;
}

/** An override variable's value, honoured only in a source checkout. */
export function devOverride(name: 'DMSNAP_ADDON' | 'DMSNAP_GUARDIAN' | 'DMSNAP_TEST_SEAMS'): string | undefined {
  const value = process.env[name];
  return value && isSourceCheckout() ? value : undefined;
}
