/**
 * Writes dmsnap's manual page, man/dmsnap.8 (or the file given), from the help texts of
 * the command line: `npm run man` after changing them. Run from the package directory.
 */
import { writeFileSync } from 'node:fs';
import { commands } from '../lib/cli/main';
import { renderManPage } from '../lib/cli/man';
import { VERSION } from '../lib/version';

const out = process.argv[2] ?? 'man/dmsnap.8';
writeFileSync(out, renderManPage(commands, VERSION));
process.stderr.write(`wrote ${out}\n`);
