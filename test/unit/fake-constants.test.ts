/**
 * The fake kernel carries its own copy of the <linux/dm-ioctl.h> numbers, so that the unit
 * tests run without a compiled addon; where one is built, the copy must be the addon's.
 */
import { loadBinding } from '../../lib/native';
import { describeWithAddon } from '../support/addon';
import { createFakeSystem } from '../support/fake-binding';
import { DM_CONSTANTS, LOOP_CONSTANTS } from '../support/fake/constants';

describeWithAddon('the fake kernel\'s constants', () => {
  it('are exactly the compiled addon\'s: same names, same values', () => {
    const addon = { ...loadBinding().constants };
    expect(Object.keys(addon).length).toBeGreaterThan(0);
    expect({ ...DM_CONSTANTS }).toEqual(addon);
    expect(Object.keys(DM_CONSTANTS).sort()).toEqual(Object.keys(addon).sort());
  });

  it('include <linux/loop.h>\'s LO_FLAGS_* and LO_NAME_SIZE, as the addon exports them', () => {
    expect({ ...LOOP_CONSTANTS }).toEqual({ ...loadBinding().loopConstants });
  });
});

describe('the fake kernel without the addon', () => {
  it('exports its own constants, frozen as the addon\'s are', () => {
    const { binding, constants } = createFakeSystem();
    expect(binding.constants).toBe(DM_CONSTANTS);
    expect(constants).toBe(DM_CONSTANTS);
    expect(Object.isFrozen(DM_CONSTANTS)).toBe(true);
  });
});
