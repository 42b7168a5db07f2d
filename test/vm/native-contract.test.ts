/**
 * The native contract suite against the real addon and kernel: the same assertions the
 * fake binding is held to in the unit suite.
 */
import { release } from 'node:os';
import { nativeContractSuite } from '../shared/native-contract.suite';
import { loadBinding } from '../../lib/native';
import { createLoopDevice } from './support/system';

nativeContractSuite({
  binding: () => loadBinding(),
  makeBlockDevice: async (sizeBytes) => createLoopDevice(sizeBytes),
  controlPath: '/dev/mapper/control',
  // Linux 5.15 moved the gendisk's registration from create to the first table load.
  gendiskAtCreate: (() => {
    const [major, minor] = release().split('.').map(Number);
    return major < 5 || (major === 5 && minor < 15);
  })(),
});
