/**
 * Start-up plumbing the benches share: where the repository is, their `--name value` options, and
 * for the benches that run in network namespaces the linked pair and scratch directory, removed
 * also on Ctrl-C.
 */
import { fileURLToPath } from 'node:url';
import { createRoutedPair, type RoutedPair } from '../test/helpers/netns.js';

export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

/** The value after `--name` on the command line, or undefined when the option is not given. */
export function textOption(name: string): string | undefined {
  const index = process.argv.indexOf(`--${name}`);
  return index === -1 ? undefined : process.argv[index + 1];
}

/** The number after `--name` on the command line, or `fallback` when the option is not given. */
export function numberOption(name: string, fallback: number): number {
  const text = textOption(name);
  return text === undefined ? fallback : Number(text);
}

/** The namespace pair and scratch directory of a bench, removed also when it is stopped with Ctrl-C. */
export async function startNamespaceBench(subnet: number, name: string): Promise<RoutedPair> {
  const bench = await createRoutedPair(subnet, `bench-${name}`);
  process.on('SIGINT', () => {
    bench.cleanup().finally(() => process.exit(130));
  });
  return bench;
}
