/**
 * The roff (man(7) macros) that the manual page is written in: text escaped so that it
 * prints as written, and the few macros it uses, each a function of plain text.
 */
import type { Definition, HelpBlock, ParagraphPart } from './help-text';

/**
 * `text` for a roff text line: backslashes as \e, hyphens as \- (so that options print,
 * and copy, as typed), anything beyond ASCII as \[uXXXX] (the page is ASCII: no preconv
 * needed), tabs as spaces.
 */
export function escape(text: string): string {
  let out = '';
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (char === '\\') out += '\\e';
    else if (char === '-') out += '\\-';
    else if (char === '\t') out += ' ';
    else if (code > 0x7e || code < 0x20) out += `\\[u${code.toString(16).toUpperCase().padStart(4, '0')}]`;
    else out += char;
  }
  return out;
}

/** A text line as roff reads it: one that begins with "." or "'" (a request) or a space (a break) made plain. */
export function textLine(roff: string): string {
  const trimmed = roff.trimStart();
  return /^[.']/.test(trimmed) ? `\\&${trimmed}` : trimmed;
}

/** A macro's argument: quoted, with quotes inside as \(dq. */
export function argument(text: string): string {
  return `"${escape(text).replace(/"/g, '\\(dq')}"`;
}

/** A macro line: `.NAME "ARG" …`. */
export function macro(name: string, ...args: string[]): string {
  return [`.${name}`, ...args.map(argument)].join(' ');
}

/** Options (-q, --cow) in bold and PLACEHOLDERS (NAME, DEVICE) in italics, the rest escaped: for usages and option terms. */
export function markup(text: string): string {
  return text
    .split(/((?<![\w-])--?[a-z][\w-]*|(?<![\w-])[A-Z][A-Z0-9_]*(?![\w-]))/)
    .map((piece, i) => (i % 2 === 0 ? escape(piece) : `\\f${piece.startsWith('-') ? 'B' : 'I'}${escape(piece)}\\fR`))
    .join('');
}

/** Lines kept as written, indented: an example or a JSON shape. */
export function literal(lines: string[]): string[] {
  return ['.RS 4', '.EX', ...lines.map((line) => (line === '' ? '.sp' : `\\&${escape(line)}`)), '.EE', '.RE'];
}

/** One paragraph: its prose filled, its literal lines kept. */
function paragraph(parts: ParagraphPart[]): string[] {
  return ['.PP', ...parts.flatMap((part) => (part.literal ? literal(part.lines) : part.lines.map((line) => textLine(escape(line)))))];
}

/**
 * A definition list as tagged paragraphs; `term` renders a term (options get markup,
 * names of variables and files bold). A term without text is a plain paragraph.
 */
export function definitions(entries: Definition[], term: (text: string) => string = markup): string[] {
  return entries.flatMap((entry) =>
    entry.text.length === 0 ? ['.PP', textLine(escape(entry.term))] : ['.TP', textLine(term(entry.term)), ...entry.text.map((line) => textLine(escape(line)))],
  );
}

/** A bold term, for names of variables and files. */
export function bold(text: string): string {
  return `\\fB${escape(text)}\\fR`;
}

/** The help blocks of a command, in roff; a section's heading in italics above it. */
export function helpBlocks(blocks: HelpBlock[]): string[] {
  return blocks.flatMap((block) => {
    if (block.kind === 'paragraph') return paragraph(block.parts);
    const heading = ['.PP', textLine(`\\fI${escape(block.heading)}:\\fR`)];
    return block.kind === 'definitions' ? [...heading, ...definitions(block.entries)] : [...heading, ...literal(block.lines)];
  });
}
