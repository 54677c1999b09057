/**
 * A file or lock under `server.state` that stops the server from starting, with a message that names
 * the file and what the operator can do about it: `serve` prints it as one line, without a stack.
 */
export class StateError extends Error {}
