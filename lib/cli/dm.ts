/**
 * `dmsnap dm …`: low-level device-mapper commands, named and shaped like dmsetup's.
 */
import { DeviceMapper } from '../dm/device-mapper';
import { VERSION } from '../version';
import { type Command, writeLine } from './command';

const version: Command = {
  name: ['dm', 'version'],
  summary: 'print the dmsnap and device-mapper driver versions',
  usage: '[--json]',
  help: 'Options:\n  --json   print {"dmsnap": "…", "driver": "…"}\n\nExample:\n  dmsnap dm version',
  options: { json: { type: 'boolean' } },
  async run(args, io) {
    using dm = await DeviceMapper.open({ binding: io.binding });
    const driver = await dm.version();
    if (args.values.json) {
      writeLine(io.stdout, JSON.stringify({ dmsnap: VERSION, driver: driver.text }));
    } else {
      writeLine(io.stdout, `dmsnap version:    ${VERSION}`);
      writeLine(io.stdout, `Driver version:    ${driver.text}`);
    }
    return 0;
  },
};

export const dmCommands: Command[] = [version];
