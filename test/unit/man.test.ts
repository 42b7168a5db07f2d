/**
 * The manual page man/dmsnap.8: the committed file is what the help texts make now (a
 * help changed without `npm run man` fails here), it holds every command and option,
 * and groff and `man -l` render it without a warning (CI installs groff-base and man-db;
 * without them those two tests are skipped, saying so).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { commands } from '../../lib/cli/main';
import { renderManPage } from '../../lib/cli/man';
import { escape } from '../../lib/cli/roff';
import { VERSION } from '../../lib/version';

const PAGE = join(__dirname, '../../man/dmsnap.8');

function installed(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

/** `it`, or `it.skip` naming the missing tool in the test's name. */
function itWith(tool: string, name: string, fn: () => void): void {
  if (installed(tool)) it(name, fn);
  else it.skip(`${name} [skipped: ${tool} is not installed]`, fn);
}

describe('man/dmsnap.8', () => {
  const committed = readFileSync(PAGE, 'utf8');

  it('is what the help texts make now (else run "npm run man" and commit man/dmsnap.8)', () => {
    const rendered = renderManPage(commands, VERSION);
    if (committed === rendered) return;
    const [old, now] = [committed.split('\n'), rendered.split('\n')];
    const line = old.findIndex((text, i) => text !== now[i]);
    throw new Error(
      `man/dmsnap.8 is out of date: run "npm run man" and commit it. First difference, line ${line + 1}:\n  committed: ${old[line]}\n  now:       ${now[line]}`,
    );
  });

  it('has a subsection per command with each of its options, the exit codes and the environment', () => {
    for (const command of commands) {
      const name = command.name.join(' ');
      expect({ name, subsection: committed.includes(`.SS "${name}"\n.SY "dmsnap ${name}"\n`) }).toEqual({ name, subsection: true });
      for (const option of Object.keys(command.options)) {
        expect({ name, option, shown: committed.includes(`\\fB${escape(`--${option}`)}\\fR`) }).toEqual({ name, option, shown: true });
      }
    }
    for (const section of ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'OPTIONS', 'COMMANDS', 'EXIT STATUS', 'ENVIRONMENT', 'FILES', 'EXAMPLES', 'SEE ALSO']) {
      expect(committed).toContain(`\n.SH "${section}"\n`);
    }
    expect(committed).toMatch(/^\.TH "DMSNAP" "8" /m);
    for (const code of ['0', '1', '2', '3', '4']) expect(committed).toContain(`.TP\n\\fB${code}\\fR\n`);
    expect(committed).toContain('128+N');
    for (const name of ['DMSNAP_LOCK_DIR', 'DMSNAP_LOCK_TIMEOUT', 'DMSNAP_HOOK_DIR', '/dev/mapper/control', '/etc/dmsnap/hooks.d', '/run/lock/dmsnap']) {
      expect(committed).toContain(`\\fB${escape(name)}\\fR`);
    }
    expect(committed).toMatch(/^\.BR dmsetup \(8\),$/m);
  });

  it('is plain ASCII, with no text line that roff would take for a request', () => {
    expect(committed).toMatch(/^[\x20-\x7e\n]*$/);
    const lines = committed.split('\n');
    const requests = lines.filter((line) => /^[.']/.test(line));
    expect(requests.filter((line) => !/^(\.\\"|\.(TH|SH|SS|SY|YS|PP|TP|RS|RE|EX|EE|BR|ad|nr|nh|sp)\b)/.test(line))).toEqual([]);
    expect(lines.filter((line) => /^\s/.test(line))).toEqual([]);
  });

  itWith('groff', 'renders with groff -man -ww without a warning', () => {
    const result = spawnSync('groff', ['-man', '-Tutf8', '-ww', '-z', PAGE], { encoding: 'utf8' });
    expect({ status: result.status, stderr: result.stderr }).toEqual({ status: 0, stderr: '' });
  });

  itWith('man', 'renders with man -l, at 80 and 60 columns, without a warning', () => {
    for (const width of ['80', '60']) {
      const env = { ...process.env, MANWIDTH: width, MANPAGER: 'cat', PAGER: 'cat', LC_ALL: 'C.UTF-8', MAN_KEEP_FORMATTING: '' };
      const result = spawnSync('man', ['--warnings', '-l', PAGE], { encoding: 'utf8', env });
      expect({ width, status: result.status, stderr: result.stderr }).toEqual({ width, status: 0, stderr: '' });
      expect(result.stdout).toMatch(/^DMSNAP\(8\) +System Administration +DMSNAP\(8\)$/m);
      expect(result.stdout).toMatch(/^ {7}dmsnap snapshot NAME\.\.\. --cow DEVICE\.\.\./m);
      expect(result.stdout).toMatch(/^EXIT STATUS$/m);
      expect(Math.max(...result.stdout.split('\n').filter((line) => !line.startsWith('           ')).map((line) => line.length))).toBeLessThanOrEqual(Number(width));
    }
  });
});
