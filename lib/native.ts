/**
 * The native addon: its TypeScript shape, how it is loaded, and how its failures become
 * dmsnap errors. Everything else in lib/ talks to the kernel through a `NativeBinding`,
 * so tests can inject a fake one.
 */
import { DmError, DmsnapError, SyscallError, type SyscallFailure } from './errors';
import { explainFailure } from './explain';

/** An open /dev/mapper/control descriptor. */
export interface NativeControl {
  readonly path: string;
  readonly closed: boolean;
  /** DM_VERSION: [major, minor, patch] of the kernel's ioctl interface. */
  version(): Promise<[number, number, number]>;
  /** Closes the descriptor once every call in flight has finished. */
  close(): void;
}

export interface NativeBlockDeviceInfo {
  sizeBytes: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  readOnly: boolean;
  major: number;
  minor: number;
}

export interface NativeBinding {
  openControl(path: string): Promise<NativeControl>;
  /** BLKGETSIZE64, BLKSSZGET, BLKPBSZGET, BLKROGET and the device number of a block device. */
  queryBlockDevice(path: string): Promise<NativeBlockDeviceInfo>;
  /** major:minor of a block device node (stat only, no open). */
  statBlockDevice(path: string): Promise<{ major: number; minor: number }>;
}

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

/**
 * Loads the addon once per thread. `DMSNAP_ADDON` may name a specific build (for
 * example the cmake-js one); otherwise `bindings` finds build/Release/dmsnap.node.
 */
export function loadBinding(): NativeBinding {
  if (loaded) return loaded;
  let addon: LoadedAddon;
  try {
    const override = process.env.DMSNAP_ADDON;
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addon = override ? require(require('node:path').resolve(override)) : require('bindings')('dmsnap');
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
