/**
 * Runs before each unit test file. Without a compiled addon lib finds no dmsnap-guardian
 * (it looks next to the addon); the fake kernel never runs one, so DMSNAP_GUARDIAN names
 * the fake's stand-in. With an addon built nothing changes.
 */
import { addonMissing } from './addon';
import { FAKE_GUARDIAN } from './fake/host';

if (addonMissing && !process.env.DMSNAP_GUARDIAN) process.env.DMSNAP_GUARDIAN = FAKE_GUARDIAN;
