/** How the kernel reads the strings of an ioctl: fixed-size fields, table arguments, numbers. */

/** Copies a string into a fixed-size C field the way the addon does (truncating bytes). */
export function field(value: string, size: number): string {
  const bytes = Buffer.from(value, 'utf8');
  return bytes.length <= size - 1 ? value : bytes.subarray(0, size - 1).toString('utf8');
}

export function byteLength(value: string): number {
  return Buffer.byteLength(value, 'utf8');
}

const isSpace = (ch: string) => ch === ' ' || (ch >= '\t' && ch <= '\r');

/** dm_split_args: whitespace-separated words, backslash quoting any character. */
export function splitArgs(input: string): string[] {
  const argv: string[] = [];
  let i = 0;
  for (;;) {
    while (i < input.length && isSpace(input[i]!)) i++;
    if (i >= input.length) break;
    let word = '';
    while (i < input.length) {
      const ch = input[i]!;
      if (ch === '\\' && i + 1 < input.length) {
        word += input[i + 1];
        i += 2;
        continue;
      }
      if (isSpace(ch)) break;
      word += ch;
      i++;
    }
    if (i < input.length) i++;
    argv.push(word);
  }
  return argv;
}

/** sscanf("%llu%c") == 1 and kstrtouint-style numbers: digits only. */
export function parseUnsigned(text: string | undefined, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (text === undefined || !/^\d+$/.test(text)) return undefined;
  const value = Number(text);
  return value <= max ? value : undefined;
}

export const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;
