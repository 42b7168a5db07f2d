/**
 * The published declarations: emitted as the package build emits them (stripInternal),
 * they type-check on their own, a consumer compiles against them, and the test hooks and
 * the native binding are not in them.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ts from 'typescript';

const CONSUMER = `
import { DeviceMapper, prepare, DmsnapError, DMSNAP_ERROR_CODES, type DmsnapErrorCode, type SnapshotStatusReport } from './index';
export async function backup(): Promise<DmsnapErrorCode | undefined> {
  const dm = await DeviceMapper.open();
  const origin = await prepare('/dev/sdb', { dm });
  const snap = await origin.snapshot({ cow: '/dev/sdc', chunkSectors: 64 });
  const status: SnapshotStatusReport = await snap.status();
  void status.state;
  try {
    await snap.drop();
  } catch (error: unknown) {
    if (error instanceof DmsnapError && (DMSNAP_ERROR_CODES as readonly string[]).includes(error.code)) return error.code;
  }
  return undefined;
}
`;

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : [join(dir, e.name)]));
}

function messages(diagnostics: readonly ts.Diagnostic[]): string[] {
  return diagnostics.map((d) => `${d.file?.fileName ?? ''}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`);
}

describe('the public declarations', () => {
  let out: string;
  beforeAll(() => {
    out = mkdtempSync(join(tmpdir(), 'dmsnap-types-'));
    const config = ts.getParsedCommandLineOfConfigFile('tsconfig.json', {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => undefined })!;
    const program = ts.createProgram(['lib/index.ts'], { ...config.options, outDir: out, rootDir: 'lib', emitDeclarationOnly: true, declaration: true, sourceMap: false });
    const emitted = program.emit();
    expect(messages(emitted.diagnostics)).toEqual([]);
    writeFileSync(join(out, 'consumer.ts'), CONSUMER);
  }, 60_000);

  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it('type-check on their own and serve a consumer', () => {
    const program = ts.createProgram([join(out, 'consumer.ts')], {
      strict: true,
      noEmit: true,
      skipLibCheck: false,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.CommonJS,
      lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'],
      types: ['node'],
      typeRoots: [join(process.cwd(), 'node_modules', '@types')],
    });
    expect(messages(ts.getPreEmitDiagnostics(program))).toEqual([]);
  }, 60_000);

  it.each([
    ['index.d.ts', ['NativeBinding', 'NativeControl']],
    ['snapshot/origin.d.ts', ['onStep', 'dropSnapshot', 'lockOptions', 'readonly dm']],
    ['dm/device-mapper.d.ts', ['nativeBinding', 'binding?:']],
    ['dm/freeze.d.ts', ['seam?:']],
    ['system/block-device.d.ts', ['binding?:']],
    ['safety/signatures.d.ts', ['binding?:', 'checkOpenCowIsBlank']],
  ])('leave out the test hooks and the native binding: %s', (file, internals) => {
    const text = readFileSync(join(out, file), 'utf8');
    expect(internals.filter((name) => text.includes(name))).toEqual([]);
  });

  it('are all emitted', () => {
    expect(filesUnder(out).some((f) => f.endsWith(join('snapshot', 'origin.d.ts')))).toBe(true);
  });
});
