/**
 * Start-up plumbing the benches share: where the repository is, their `--name value` options, and
 * for the benches that run in network namespaces the linked pair, a scratch directory and the
 * cleanup of both (also on Ctrl-C).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLinkedPair, type LinkedPair } from '../test/helpers/netns.js';

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

export interface NamespaceBench {
  pair: LinkedPair;
  /** Scratch directory for configs and state; removed by `cleanup`. */
  directory: string;
  cleanup(): Promise<void>;
}

/**
 * A server/client namespace pair on 10.77.`subnet`.0/24 whose client routes everything through its
 * veth (the load clients address the server's whole pool), plus a scratch directory.
 */
export async function startNamespaceBench(subnet: number, name: string): Promise<NamespaceBench> {
  const pair = await createLinkedPair(subnet);
  const directory = await mkdtemp(join(tmpdir(), `rackboot-bench-${name}-`));
  const cleanup = async () => {
    await pair.network.cleanup();
    await rm(directory, { recursive: true, force: true });
  };
  process.on('SIGINT', () => {
    cleanup().finally(() => process.exit(130));
  });
  await pair.client.exec('ip', ['route', 'add', 'default', 'dev', pair.clientInterface]);
  return { pair, directory, cleanup };
}
