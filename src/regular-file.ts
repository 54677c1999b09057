import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';

/**
 * The bytes of `file`, or undefined when it is not a regular file; other errors are thrown. Opened
 * without blocking and checked before the read: reading a FIFO waits for a writer, and templates are
 * read on the server's main thread, so every request (and `validate`) would stop with it.
 */
export function readRegularFileSync(file: string): Buffer | undefined {
  const descriptor = openSync(file, NONBLOCKING_READ);
  try {
    return fstatSync(descriptor).isFile() ? readFileSync(descriptor) : undefined;
  } finally {
    closeSync(descriptor);
  }
}

/** readRegularFileSync's answer without blocking the thread: the config, read by every verb and each reload. */
export async function readRegularFile(file: string): Promise<Buffer | undefined> {
  const handle = await open(file, NONBLOCKING_READ);
  try {
    return (await handle.stat()).isFile() ? await handle.readFile() : undefined;
  } finally {
    await handle.close();
  }
}

const NONBLOCKING_READ = constants.O_RDONLY | constants.O_NONBLOCK;
