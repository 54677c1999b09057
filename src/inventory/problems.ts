import { relative } from 'node:path';

/** One thing wrong with a config file, pointing at the offending YAML node. */
export interface Problem {
  file: string;
  /** 1-based */
  line: number;
  /** 1-based */
  col: number;
  message: string;
}

/** `FILE:LINE:COL: message`, with FILE relative to the working directory when it is below it. */
export function formatProblem(problem: Problem, cwd = process.cwd()): string {
  const shown = relative(cwd, problem.file);
  const file = shown.startsWith('..') || shown === '' ? problem.file : shown;
  return `${file}:${problem.line}:${problem.col}: ${problem.message}`;
}

/**
 * Problem lines to follow the colon of the line that introduces them: one stays on that line (a
 * file that cannot be read, one syntax error), so a refusal for one reason is one line as the other
 * refusals of the CLI are; several go one per line below it, as `rackboot validate` lists them.
 */
export function problemsAfterColon(lines: readonly string[]): string {
  return lines.length === 1 ? ` ${lines[0]}` : `\n${lines.join('\n')}`;
}

export function byPosition(a: Problem, b: Problem): number {
  return a.file.localeCompare(b.file) || a.line - b.line || a.col - b.col;
}

/** The closest candidate within a small edit distance, for "did you mean" hints. */
export function closestName(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(word.length / 3)) + 1;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution);
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}
