/**
 * Whether the compiled addon is there for the unit tests that need the real one (the
 * rest run on the fake kernel, which needs none), and the skips of those tests when not.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';

/** Where loadBinding() would load the addon from: DMSNAP_ADDON, else what `bindings` finds. */
function addonPath(): string | undefined {
  const override = process.env.DMSNAP_ADDON;
  if (override) return resolve(override);
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('bindings')({ bindings: 'dmsnap', path: true }) as string;
  } catch {
    return undefined;
  }
}

const path = addonPath();

/** Why the real addon cannot be used (no build/Release/dmsnap.node, or DMSNAP_ADDON missing), or undefined. */
export const addonMissing: string | undefined =
  path && existsSync(path) ? undefined : `no compiled addon (${process.env.DMSNAP_ADDON || 'build/Release/dmsnap.node'} is missing: run npx node-gyp rebuild)`;

/** `describe`, or `describe.skip` with the reason in its name when no addon is built. */
export function describeWithAddon(name: string, fn: () => void): void {
  if (addonMissing) describe.skip(`${name} [skipped: ${addonMissing}]`, fn);
  else describe(name, fn);
}
