import { isAbsolute, relative, sep } from 'node:path';

/** True when `target` lies outside the directory `root` (both absolute; neither is resolved here). */
export function escapesRoot(root: string, target: string): boolean {
  const within = relative(root, target);
  return within === '..' || within.startsWith(`..${sep}`) || isAbsolute(within);
}
