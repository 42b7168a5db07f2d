/**
 * Command-line mistakes in dmsnap's own words: what node:util parseArgs refused (an
 * unknown option, a missing or unwanted option value, a stray argument), said as
 * "unknown option --foo; did you mean --food?", and the closest of several names.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

type Options = NonNullable<ParseArgsConfig['options']>;

/** The edit distance of `a` and `b` (insertions, deletions and substitutions). */
export function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = row;
  }
  return previous[b.length];
}

/**
 * The one of `candidates` that `word` most likely misspells: within 2 edits, and fewer
 * than its length less one (the nearest), else the only one it begins; undefined when
 * none is close.
 */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: { name: string; distance: number } | undefined;
  for (const name of candidates) {
    const distance = editDistance(word, name);
    if (distance <= Math.min(2, word.length - 2) && (!best || distance < best.distance)) best = { name, distance };
  }
  if (best) return best.name;
  const prefixed = word.length >= 3 ? candidates.filter((name) => name.startsWith(word)) : [];
  return prefixed.length === 1 ? prefixed[0] : undefined;
}

/** The tokens of `argv` as a lenient parse sees them: every option and positional, nothing refused. */
function lenientTokens(argv: string[], options: Options) {
  return parseArgs({ args: argv, options, allowPositionals: true, strict: false, tokens: true }).tokens;
}

function unknownOption(argv: string[], options: Options): string | undefined {
  const token = lenientTokens(argv, options).find((t) => t.kind === 'option' && !(t.name in options));
  if (token?.kind !== 'option') return undefined;
  const long = token.rawName.startsWith('--');
  const guess = long ? closest(token.name, Object.keys(options)) : undefined;
  return `unknown option ${token.rawName}${guess ? ` (did you mean --${guess}?)` : ''}`;
}

function badOptionValue(argv: string[], options: Options): string | undefined {
  for (const token of lenientTokens(argv, options)) {
    if (token.kind !== 'option' || !(token.name in options)) continue;
    const takesValue = options[token.name].type === 'string';
    if (takesValue && token.value === undefined) return `option ${token.rawName} needs a value`;
    if (takesValue && !token.inlineValue && token.value!.length > 1 && token.value!.startsWith('-')) {
      return `option ${token.rawName} needs a value, not the option "${token.value}" (write ${token.rawName}=${token.value} if that is the value)`;
    }
    if (!takesValue && token.value !== undefined) return `option ${token.rawName} takes no value; got "${token.value}"`;
  }
  return undefined;
}

function strayArgument(argv: string[], options: Options): string | undefined {
  const token = lenientTokens(argv, options).find((t) => t.kind === 'positional');
  return token?.kind === 'positional' ? `unexpected argument "${token.value}" (this command takes none)` : undefined;
}

/**
 * What parseArgs refused in `argv`, said in dmsnap's words; its own message (without the
 * advice about "--") for an error this does not know.
 */
export function parseErrorMessage(error: unknown, argv: string[], options: Options): string {
  const { code, message } = error as { code?: string; message?: string };
  // Node's codes: ERR_PARSE_ARGS_UNKNOWN_OPTION, …_INVALID_OPTION_VALUE, …_UNEXPECTED_POSITIONAL.
  const kind = String(code).replace(/^ERR_PARSE_ARGS_/, '');
  let text: string | undefined;
  if (kind === 'UNKNOWN_OPTION') text = unknownOption(argv, options);
  else if (kind === 'INVALID_OPTION_VALUE') text = badOptionValue(argv, options);
  else if (kind === 'UNEXPECTED_POSITIONAL') text = strayArgument(argv, options);
  return text ?? String(message).replace(/\. To specify a positional.*$/s, '');
}
