import { constants } from 'node:fs';
import { access, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeParents, nearestExisting } from '../durable-file.js';
import { checkArguments, checkTemplate } from '../ignition/check.js';
import { readRegularFile } from '../regular-file.js';
import type { LoadOptions } from './load.js';
import { type Locator, locatorOnDemand } from './parse.js';
import type { Problem } from './problems.js';
import type { Config } from './schema.js';

/**
 * What `rackboot validate` checks: the whole config, every Ignition/Butane template rendered for the
 * machines that use it; missing boot assets are warnings (assets are downloaded, not committed).
 * `machines adopt` writes nothing these checks refuse.
 */
export const VALIDATE_CHECKS: LoadOptions = { missingAssets: 'warn', checkTemplate, checkArguments };

/**
 * Whether the user this runs as can keep its state in server.state. `create` (serve) makes the
 * directory and writes a probe file in it, as the state store will; without it (validate) nothing is
 * written: an existing directory is checked for write access, a missing one at its nearest existing
 * ancestor.
 */
export async function stateDirectoryProblem(
  config: Config,
  options: { create: boolean },
): Promise<Problem | undefined> {
  const directory = config.server.state;
  const reason = options.create ? await unwritableAfterCreating(directory) : await unwritable(directory);
  if (reason === undefined) return undefined;
  const locate = await locatorFor(config);
  return locate.at(
    ['server', 'state'],
    `server.state ${directory} ${reason}; fix its owner or permissions, or set server.state to a writable directory`,
  );
}

async function unwritableAfterCreating(directory: string): Promise<string | undefined> {
  try {
    await makeParents(directory, 0o750);
    const probe = join(directory, `.rackboot-probe-${process.pid}`);
    await writeFile(probe, '');
    await rm(probe);
    return undefined;
  } catch (error) {
    return describeFileError(error as NodeJS.ErrnoException);
  }
}

async function unwritable(directory: string): Promise<string | undefined> {
  let nearest: Awaited<ReturnType<typeof nearestExisting>>;
  try {
    nearest = await nearestExisting(directory);
  } catch (error) {
    return describeFileError(error as NodeJS.ErrnoException);
  }
  const { existing, stats, missing } = nearest;
  const itself = missing.length === 0;
  if (!stats.isDirectory()) return itself ? 'is not a directory' : `cannot be created: ${existing} is a file`;
  try {
    await access(existing, constants.W_OK | constants.X_OK);
    return undefined;
  } catch {
    return itself ? 'is not writable' : `cannot be created: ${existing} is not writable`;
  }
}

function describeFileError(error: NodeJS.ErrnoException): string {
  switch (error.code) {
    case 'EACCES':
    case 'EPERM':
      return `is not writable (${error.code} at ${error.path ?? 'it'})`;
    case 'EROFS':
      return 'is on a read-only file system';
    case 'ENOTDIR':
    case 'EEXIST':
      return 'is not a directory (or a parent of it is a file)';
    default:
      return `cannot be used: ${error.message}`;
  }
}

async function locatorFor(config: Config): Promise<Locator> {
  // Only to place the problem: a file gone since the load puts it at its first line.
  const bytes = await readRegularFile(config.file).catch(() => undefined);
  return locatorOnDemand(bytes?.toString('utf8') ?? '', config.file);
}
