/** The version of this package, read from its package.json. */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

function readVersion(): string {
  // lib/ runs from the sources (tests) and from dist/lib (the package): walk up to it.
  for (let dir = __dirname; dir !== dirname(dir); dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'dmsnap' && pkg.version) return pkg.version;
    }
  }
  return '0.0.0';
}

/** dmsnap's version, e.g. "0.1.0"; "0.0.0" when its package.json cannot be found. */
export const VERSION: string = readVersion();
