/**
 * The shared DeviceMapper suite against the real addon and kernel (run in both udev
 * flavours by the VM matrix).
 */
import { deviceMapperSuite } from '../shared/device-mapper.suite';
import { freezeSuite } from '../shared/freeze.suite';
import { loadBinding } from '../../lib/native';
import { createLoopDevice } from './support/system';

deviceMapperSuite({
  binding: () => loadBinding(),
  openOptions: () => ({}),
  async makeBlockDevice(sizeBytes) {
    return createLoopDevice(sizeBytes);
  },
});

freezeSuite({
  binding: () => loadBinding(),
  openOptions: () => ({}),
});
