/**
 * Removing what a suite made, whatever state a test left it in: suspended devices are
 * resumed (a staged table cleared first), users go before the devices they use (a remove
 * that fails with EBUSY is simply tried again next round), for a few rounds.
 */

/** How a suite reaches its devices. */
export interface TestDevices {
  /** Names of the suite's devices that still exist. */
  list(): Promise<string[]>;
  /** Makes the device removable: resumed, with no table waiting. */
  settle(name: string): Promise<void>;
  remove(name: string): Promise<void>;
  /** Order within a round: lower first (users before what they use). */
  rank?(name: string): number;
}

export async function removeTestDevices(devices: TestDevices, rounds = 5, pauseMs = 0): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    const names = (await devices.list()).sort((a, b) => (devices.rank?.(a) ?? 0) - (devices.rank?.(b) ?? 0));
    if (names.length === 0) return;
    for (const name of names) await devices.settle(name).catch(() => undefined);
    // EBUSY: a device using it goes first; ENXIO: a deferred removal finished meanwhile.
    for (const name of names) await devices.remove(name).catch(() => undefined);
    if (pauseMs > 0 && round >= 5) await new Promise((resolve) => setTimeout(resolve, pauseMs));
  }
  throw new Error(`could not remove the test devices: ${(await devices.list()).join(', ')}`);
}
