/**
 * The shape of lib/: files of one concern, short enough to read at once, functions under
 * a screen, and the native binding reached only by the layers that own it (ARCHITECTURE.md).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ts from 'typescript';

const MAX_FILE_LINES = 360;
const MAX_FUNCTION_LINES = 60;

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** "file:line name (N lines)" for each function longer than the limit. */
function longFunctions(file: string): string[] {
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const found: string[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isFunctionLike(node) && 'body' in node && node.body) {
      const first = source.getLineAndCharacterOfPosition(node.getStart()).line;
      const last = source.getLineAndCharacterOfPosition(node.end).line;
      const name = node.name?.getText() ?? (ts.isVariableDeclaration(node.parent) ? node.parent.name.getText() : '(anonymous)');
      if (last - first + 1 > MAX_FUNCTION_LINES) found.push(`${file}:${first + 1} ${name} (${last - first + 1} lines)`);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

describe('the shape of lib/', () => {
  const files = sources('lib');

  it(`has no file over ${MAX_FILE_LINES} lines`, () => {
    const long = files.map((f) => [f, readFileSync(f, 'utf8').split('\n').length] as const).filter(([, n]) => n > MAX_FILE_LINES);
    expect(long).toEqual([]);
  });

  it(`has no function over ${MAX_FUNCTION_LINES} lines`, () => {
    expect(files.flatMap(longFunctions)).toEqual([]);
  });

  it('reaches the native binding only from lib/native*, lib/dm/ and lib/system/', () => {
    const owners = /^lib\/(native[^/]*\.ts|dm\/|system\/)/;
    const users = files.filter((f) => !owners.test(f) && /\bnativeBinding\b/.test(readFileSync(f, 'utf8')));
    expect(users).toEqual([]);
  });

  it('keeps the snapshot layer off the addon: lib/snapshot/ imports nothing from lib/native', () => {
    const importers = files.filter((f) => f.startsWith(join('lib', 'snapshot')) && /from '\.\.\/native(-types)?'/.test(readFileSync(f, 'utf8')));
    expect(importers).toEqual([]);
  });
});
