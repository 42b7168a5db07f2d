/**
 * The structure of dmsnap's help texts, for what reshapes them (the manual page, the
 * shell completion). A help text is paragraphs separated by blank lines: prose, whose
 * indented lines are kept as written (a JSON shape), or a section under a heading line
 * ("Options:", "Example:"): a list of definitions ("  --cow DEVICE   text", the text's
 * further lines indented to where it starts), or example lines.
 */

/** One entry of a definition list: "--cow DEVICE", "-h, --help" or "0", and what it means. */
export interface Definition {
  term: string;
  /** The explanation, one string per line of the help text; none for a term alone. */
  text: string[];
}

/** A run of prose lines, or of indented lines kept as written (one indentation level removed). */
export interface ParagraphPart {
  literal: boolean;
  lines: string[];
}

export type HelpBlock =
  | { kind: 'paragraph'; parts: ParagraphPart[] }
  | { kind: 'definitions'; heading: string; entries: Definition[] }
  | { kind: 'examples'; heading: string; lines: string[] };

/** A paragraph's first line that heads a section: "Options:", "Global options (before or after the command):". */
const HEADING = /^[A-Z][^:]*:$/;

/** A definition's line: the indentation, the term, and after two spaces or more the text. */
const DEFINITION = /^(\s*)(\S(?:.*?\S)??)(?: {2,}(\S.*))?$/;

/** The blocks of a help text, in order. */
export function parseHelp(text: string): HelpBlock[] {
  return text
    .split(/\n[ \t]*\n/)
    .map((paragraph) => paragraph.split('\n').map((line) => line.trimEnd()))
    .filter((lines) => lines.some((line) => line !== ''))
    .map(parseParagraph);
}

function parseParagraph(lines: string[]): HelpBlock {
  const body = lines.slice(1);
  if (HEADING.test(lines[0]) && body.length > 0 && body.every((line) => /^\s/.test(line))) {
    const heading = lines[0].slice(0, -1);
    if (/^Examples?$/.test(heading)) return { kind: 'examples', heading, lines: dedent(body) };
    return { kind: 'definitions', heading, entries: parseDefinitions(body) };
  }
  const parts: ParagraphPart[] = [];
  for (const line of lines) {
    const literal = /^\s/.test(line);
    const last = parts.at(-1);
    if (last?.literal === literal) last.lines.push(line);
    else parts.push({ literal, lines: [line] });
  }
  return { kind: 'paragraph', parts: parts.map((part) => (part.literal ? { literal: true, lines: dedent(part.lines) } : part)) };
}

/**
 * The definitions of a section's lines. A line indented as far as the previous entry's
 * text (or further) continues that text; any other line starts an entry.
 */
export function parseDefinitions(lines: string[]): Definition[] {
  const entries: { term: string; text: string[]; column: number }[] = [];
  for (const line of lines) {
    const indent = line.length - line.trimStart().length;
    const last = entries.at(-1);
    if (last && indent >= last.column) {
      last.text.push(line.trim());
      continue;
    }
    const [, lead, term, text] = DEFINITION.exec(line)!;
    const column = text === undefined ? Infinity : line.indexOf(text, lead.length + term.length);
    entries.push({ term, text: text === undefined ? [] : [text], column });
  }
  return entries.map(({ term, text }) => ({ term, text }));
}

/** The lines without the indentation they all share. */
function dedent(lines: string[]): string[] {
  const indent = Math.min(...lines.filter((line) => line.trim() !== '').map((line) => line.length - line.trimStart().length));
  return lines.map((line) => line.slice(indent));
}

/** An option's term split: its flags ("-h", "--help") and its value's placeholder ("DEVICE", "FILE|-", "drop|keep"), if any. */
export function optionTerm(term: string): { flags: string[]; value?: string } {
  const match = /^((?:--?[\w-]+)(?:, --?[\w-]+)*)(?: (\S+))?$/.exec(term);
  if (!match) return { flags: [] };
  return { flags: match[1].split(', '), ...(match[2] === undefined ? {} : { value: match[2] }) };
}

/** The option definitions of a help text: every "Options" section's entries whose term is an option. */
export function optionDefinitions(help: string): Definition[] {
  return parseHelp(help)
    .flatMap((block) => (block.kind === 'definitions' ? block.entries : []))
    .filter((entry) => optionTerm(entry.term).flags.length > 0);
}
