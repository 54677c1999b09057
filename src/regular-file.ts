import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';

/**
 * The bytes of `file`, or undefined when it is not a regular file; other errors are thrown. Opened
 * without blocking and checked before the read: reading a FIFO waits for a writer, and templates are
 * read on the server's main thread, so every request (and `validate`) would stop with it.
 */
export function readRegularFileSync(file: string): Buffer | undefined {
  const descriptor = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    return fstatSync(descriptor).isFile() ? readFileSync(descriptor) : undefined;
  } finally {
    closeSync(descriptor);
  }
}
