/**
 * The native addon: how it is loaded, and how its failures become dmsnap errors (its
 * TypeScript shape is in native-types.ts). Everything else in lib/ talks to the kernel through a `NativeBinding`,
 * so tests can inject a fake one.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { devOverride } from './dev-overrides';
import { DmError, DmsnapError, SyscallError, type SyscallFailure } from './errors';
import { explainFailure } from './explain';

export type { NativeDeviceRef, NativeDeviceInfo, NativeTarget, NativeListEntry, NativeTargetVersion, NativeFreezeMember, NativeFreezeMemberResult, NativeFreezeOptions, NativeFreezeResult, NativeControl, NativeBlockDeviceInfo, NativeSignature, NativeUdevCookie, NativeBlockDevice, NativeLoopAttachment, NativeLoopStatus, NativeBinding } from './native-types';
import type { NativeBinding } from './native-types';

interface LoadedAddon extends NativeBinding {
  setErrorFactory(factory: (failure: SyscallFailure) => Error): void;
}

/** Turns the facts the addon reports into the matching dmsnap error. */
export function makeSyscallError(failure: SyscallFailure): SyscallError {
  const message = explainFailure(failure);
  return failure.ioctl?.startsWith('DM_')
    ? new DmError(message, { ...failure, ioctl: failure.ioctl })
    : new SyscallError(message, failure);
}

let loaded: NativeBinding | undefined;
let loadedPath: string | undefined;

/**
 * The dmsnap-guardian executable, next to the addon that was loaded (a source build's
 * build/Release, or the prebuild's directory); DMSNAP_GUARDIAN overrides in a checkout.
 */
export function guardianExecutable(): string {
  const override = devOverride('DMSNAP_GUARDIAN');
  if (override) return override;
  loadBinding();
  return join(dirname(loadedPath!), 'dmsnap-guardian');
}

/** The directory of dmsnap's package.json above this file (lib/, dist/lib or the bundle's dist/). */
function packageRoot(): string | undefined {
  for (let dir = __dirname; dir !== dirname(dir); dir = dirname(dir)) {
    try {
      if ((JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string }).name === 'dmsnap') return dir;
    } catch {
      // no package.json here
    }
  }
  return undefined;
}

/** Where the addon is, in this order: DMSNAP_ADDON (checkout only), a source build, the prebuild. */
function findAddon(): { path: string; prebuilt: boolean } | { missing: string } {
  const override = devOverride('DMSNAP_ADDON');
  if (override) return { path: resolve(override), prebuilt: false };
  const root = packageRoot();
  // A source build (node-gyp's build/Release, found by `bindings`) wins: a developer's
  // fresh build must not lose to a stale prebuild. node-gyp's usual place is looked at
  // first: `bindings` tries a dozen paths, each a stat, before it gets there.
  const release = root ? join(root, 'build', 'Release', 'dmsnap.node') : undefined;
  if (release && existsSync(release)) return { path: release, prebuilt: false };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const found = require('bindings')({ bindings: 'dmsnap', path: true, ...(root ? { module_root: root } : {}) }) as string;
    return { path: found, prebuilt: false };
  } catch {
    // no source build: the prebuild
  }
  const target = `${process.platform}-${process.arch}`;
  const prebuild = root ? join(root, 'prebuilds', target, 'dmsnap.node') : undefined;
  if (prebuild && existsSync(prebuild)) return { path: prebuild, prebuilt: true };
  return { missing: `this package has no prebuilt binary for ${target} and was not built from source` };
}

/** What to do when the addon cannot be loaded: build it (2 lines, see README "Installing"). */
const HOW_TO_BUILD =
  `Build it with 'npm rebuild dmsnap' (needs python3, make and g++); if npm skipped dmsnap's install script, ` +
  `allow it first with 'npm install-scripts approve dmsnap' (global installs: 'npm install -g dmsnap --allow-scripts=dmsnap').`;

/**
 * Loads the addon once per thread: `DMSNAP_ADDON` (in a source checkout only) may name a
 * specific build (for example the cmake-js one); otherwise a source build
 * (build/Release/dmsnap.node, found by `bindings`), then the prebuilt binary shipped in
 * the package (prebuilds/<platform>-<arch>/dmsnap.node, with dmsnap-guardian beside it).
 */
export function loadBinding(): NativeBinding {
  if (loaded) return loaded;
  const found = findAddon();
  if ('missing' in found) {
    throw new DmsnapError(`cannot load the dmsnap native addon: ${found.missing}.\n${HOW_TO_BUILD}`, 'ERR_DMSNAP_ADDON');
  }
  let addon: LoadedAddon;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addon = require(found.path);
  } catch (cause) {
    const what = found.prebuilt ? `the prebuilt addon ${found.path} does not load here (glibc 2.34 or later is needed)` : `${found.path} does not load`;
    throw new DmsnapError(`cannot load the dmsnap native addon: ${what}: ${firstLine((cause as Error).message)}.\n${HOW_TO_BUILD}`, 'ERR_DMSNAP_ADDON', { cause });
  }
  addon.setErrorFactory(makeSyscallError);
  loadedPath = found.path;
  loaded = addon;
  return addon;
}

function firstLine(message: string): string {
  return message.split('\n')[0]!.replace(/\.$/, '');
}

/**
 * Awaits a native call and, if it fails, gives the error the stack of the JavaScript
 * caller (the addon's own stack ends in the event loop and says nothing useful).
 */
export async function callNative<T>(call: () => Promise<T>): Promise<T> {
  const trace: { stack?: string } = {};
  Error.captureStackTrace(trace, callNative);
  try {
    return await call();
  } catch (error) {
    if (error instanceof Error && trace.stack) {
      const frames = trace.stack.slice(trace.stack.indexOf('\n'));
      error.stack = `${error.name}: ${error.message}${frames}`;
    }
    throw error;
  }
}
