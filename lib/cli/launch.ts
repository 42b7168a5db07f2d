#!/usr/bin/env node
/**
 * The `dmsnap` executable: loads the CLI bundle (dist/dmsnap-cli.js, lib/cli/main.ts and
 * everything it uses) through V8's code cache (compile-cache.ts) and runs it. Kept small:
 * it is compiled from scratch on every start.
 */
import { readFileSync, statSync, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import { Script } from 'node:vm';
import { cacheDirectory, cacheSlot, readCache, writeCache, type CacheSlot } from './compile-cache';

type Main = (argv: string[], io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream; stdin: NodeJS.ReadableStream }) => Promise<number>;

const BUNDLE = join(__dirname, 'dmsnap-cli.js');
const debug = process.env.DMSNAP_DEBUG === 'compile-cache';

function note(message: string): void {
  if (debug) process.stderr.write(`dmsnap: compile cache: ${message}\n`);
}

/** The command's words, for the cache's file name: 'snapshot', 'dm-table', … */
function commandKey(argv: string[]): string {
  const words = argv.filter((word) => !word.startsWith('-'));
  return words[0] === 'dm' && words[1] ? `dm-${words[1]}` : (words[0] ?? 'main');
}

/** The slot for this run, or undefined (no trusted directory); warns once about an unsafe one. */
function slotFor(argv: string[], st: Stats): CacheSlot | undefined {
  const found = cacheDirectory();
  if ('dir' in found) return cacheSlot(found.dir, commandKey(argv), st);
  note(found.refusal);
  if (found.warn && !argv.includes('-q') && !argv.includes('--quiet')) process.stderr.write(`dmsnap: warning: ${found.refusal}\n`);
  return undefined;
}

/** Compiles the bundle (with the cached code when it is accepted) and returns its exports' main. */
function load(source: string, cached: Buffer | undefined): { main: Main; script: Script } {
  // The same wrapper as Node's CommonJS loader, on the bundle's first line: line numbers stay.
  const wrapped = `(function (exports, require, module, __filename, __dirname) { ${source}\n});`;
  const script = new Script(wrapped, { filename: BUNDLE, ...(cached ? { cachedData: cached } : {}) });
  // This file's require resolves as the bundle's would: both are in dist/.
  const bundle = { exports: {} as Record<string, unknown> };
  (script.runInThisContext() as (...args: unknown[]) => void).call(bundle.exports, bundle.exports, require, bundle, BUNDLE, dirname(BUNDLE));
  return { main: (bundle.exports as { main: Main }).main, script };
}

function launch(): void {
  const argv = process.argv.slice(2);
  const source = readFileSync(BUNDLE, 'utf8');
  let slot: CacheSlot | undefined;
  let cached: Buffer | undefined;
  try {
    slot = slotFor(argv, statSync(BUNDLE));
    cached = slot && readCache(slot);
  } catch (error) {
    note((error as Error).message);
  }
  const { main, script } = load(source, cached);
  const fresh = !cached || script.cachedDataRejected === true;
  note(cached ? (fresh ? 'rejected by V8' : 'used') : 'none yet');
  // process.stdin is made on first use (a pipe's loads node:net): only commands that read it pay.
  const io = { stdout: process.stdout, stderr: process.stderr, get stdin() { return process.stdin; } };
  void main(argv, io).then((code) => {
    process.exitCode = code;
    // After the command: the cache then holds every function it compiled.
    if (slot && fresh) {
      try {
        writeCache(slot, script.createCachedData());
        note(`written to ${slot.file}`);
      } catch (error) {
        note((error as Error).message);
      }
    }
  });
}

launch();
