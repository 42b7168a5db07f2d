/**
 * SIGINT and SIGTERM while a command takes its snapshots: remembered, not obeyed at once,
 * so that the snapshot (or its rollback) and the post-thaw hooks finish; the snapshots
 * taken are then dropped and the command exits with the signal's code (130, 143).
 */
import type { Snapshot } from '../snapshot';

/** A command stopped by a signal once its snapshot step was over: main exits with 128 + the signal's number. */
export class InterruptedError extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`stopped by ${signal}; the snapshots it took were dropped`);
    this.name = 'InterruptedError';
  }
}

/** Runs `take` with SIGINT and SIGTERM deferred; after one, drops what it took and throws InterruptedError. */
export async function takeDeferringSignals(take: () => Promise<Snapshot[]>): Promise<Snapshot[]> {
  let signal: NodeJS.Signals | undefined;
  const remember = (received: NodeJS.Signals) => {
    signal ??= received;
  };
  process.on('SIGINT', remember);
  process.on('SIGTERM', remember);
  try {
    const snaps = await take();
    if (signal) {
      for (const snap of snaps) await snap.drop().catch(() => undefined);
      throw new InterruptedError(signal);
    }
    return snaps;
  } finally {
    process.off('SIGINT', remember);
    process.off('SIGTERM', remember);
  }
}
