#!/usr/bin/env node
// dmsnap's install script (package.json "install"). When the package's prebuilt binary for
// this platform (prebuilds/<platform>-<arch>/) loads here, there is nothing to do and no
// compiler is needed. Otherwise, in a source checkout, or when asked to
// (`DMSNAP_BUILD_FROM_SOURCE=1 npm rebuild dmsnap`, or the --build-from-source that other
// native packages read), it builds the addon and dmsnap-guardian from source with node-gyp
// (python3, make and g++), then removes node-gyp's intermediates (object files, makefiles;
// a checkout keeps them), keeping build/Release/dmsnap.node and dmsnap-guardian, which
// lib/native.ts loads before any prebuild.
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync, readdirSync, rmSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');
const target = `${process.platform}-${process.arch}`;
const prebuilt = join(root, 'prebuilds', target);

/** Why the prebuild cannot serve here, or undefined when it loads. */
function prebuildProblem() {
  if (!existsSync(join(prebuilt, 'dmsnap.node')) || !existsSync(join(prebuilt, 'dmsnap-guardian'))) return `no prebuilt binary for ${target}`;
  try {
    require(join(prebuilt, 'dmsnap.node'));
    return undefined;
  } catch (error) {
    return `the prebuilt binary for ${target} does not load here (${String(error.message).split('\n')[0]})`;
  }
}

// A checkout (it has the test suite, which the package never ships) builds what it tests,
// and keeps node-gyp's intermediates for incremental builds.
const checkout = existsSync(join(root, 'test', 'support'));

/** Why to build from source even with a prebuild, or undefined. */
function sourceBuildWanted() {
  if (process.env.DMSNAP_BUILD_FROM_SOURCE === '1' || process.env.npm_config_build_from_source === 'true') return 'a source build was asked for';
  if (checkout) return 'this is a source checkout';
  return undefined;
}

/** Keeps build/Release/dmsnap.node and dmsnap-guardian, and removes what node-gyp left around them. */
function removeIntermediates() {
  const build = join(root, 'build');
  for (const entry of readdirSync(build)) {
    if (entry !== 'Release') rmSync(join(build, entry), { recursive: true, force: true });
  }
  const release = join(build, 'Release');
  for (const entry of readdirSync(release)) {
    if (entry !== 'dmsnap.node' && entry !== 'dmsnap-guardian') rmSync(join(release, entry), { recursive: true, force: true });
  }
}

const reason = sourceBuildWanted() ?? prebuildProblem();
if (reason === undefined) {
  console.log(`dmsnap: using the prebuilt binaries for ${target}`);
  process.exit(0);
}
console.log(`dmsnap: ${reason}; building from source with node-gyp (needs python3, make and g++)`);
// npm names its own node-gyp in npm_config_node_gyp (and puts a node-gyp on PATH).
const gyp = process.env.npm_config_node_gyp;
const result = gyp
  ? spawnSync(process.execPath, [gyp, 'rebuild'], { cwd: root, stdio: 'inherit' })
  : spawnSync('node-gyp', ['rebuild'], { cwd: root, stdio: 'inherit', shell: true });
if (result.status !== 0) {
  console.error(
    `dmsnap: the source build failed${result.error ? ` (${result.error.message})` : ''}. ` +
      `Install python3, make and g++, then run 'npm rebuild dmsnap'.`,
  );
  process.exit(1);
}
if (!checkout) removeIntermediates();
