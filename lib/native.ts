/**
 * The native addon: how it is loaded, and how its failures become dmsnap errors (its
 * TypeScript shape is in native-types.ts). Everything else in lib/ talks to the kernel through a `NativeBinding`,
 * so tests can inject a fake one.
 */
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
 * The dmsnap-guardian executable, built next to the addon (DMSNAP_GUARDIAN overrides).
 */
export function guardianExecutable(): string {
  const override = devOverride('DMSNAP_GUARDIAN');
  if (override) return override;
  loadBinding();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { dirname, join } = require('node:path') as typeof import('node:path');
  return join(dirname(loadedPath!), 'dmsnap-guardian');
}

/**
 * Loads the addon once per thread. `DMSNAP_ADDON` may name a specific build (for
 * example the cmake-js one); otherwise `bindings` finds build/Release/dmsnap.node.
 */
export function loadBinding(): NativeBinding {
  if (loaded) return loaded;
  let addon: LoadedAddon;
  try {
    const override = devOverride('DMSNAP_ADDON');
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    loadedPath = override ? require('node:path').resolve(override) : require('bindings')({ bindings: 'dmsnap', path: true });
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addon = require(loadedPath!);
  } catch (cause) {
    throw new DmsnapError(
      `cannot load the dmsnap native addon: ${(cause as Error).message}. ` +
        `Rebuild it with 'npm rebuild dmsnap' (needs python3, make and g++).`,
      'ERR_DMSNAP_ADDON',
      { cause },
    );
  }
  addon.setErrorFactory(makeSyscallError);
  loaded = addon;
  return addon;
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
