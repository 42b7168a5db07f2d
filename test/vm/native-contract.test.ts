/**
 * The native contract suite against the real addon and kernel: the same assertions the
 * fake binding is held to in the unit suite.
 */
import { nativeContractSuite } from '../shared/native-contract.suite';
import { loadBinding } from '../../lib/native';
import { createLoopDevice } from './support/system';

nativeContractSuite({
  binding: () => loadBinding(),
  makeBlockDevice: async (sizeBytes) => createLoopDevice(sizeBytes),
  controlPath: '/dev/mapper/control',
});
