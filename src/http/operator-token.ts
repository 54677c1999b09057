import { join } from 'node:path';
import { readOrCreateStateSecret, readStateSecret } from '../state-secret.js';

/**
 * Without `server.api_token` (or $RACKBOOT_API_TOKEN) the operator API takes the token the server
 * keeps in this file of `server.state` (0600), so the CLI on the same host works with no setup: it
 * reads the file through the config, as the server's own user or root.
 */
export const OPERATOR_TOKEN_FILE = 'operator-token';

/** The server's own operator token, made on first start. */
export async function openOperatorToken(stateDir: string): Promise<string> {
  return (await readOrCreateStateSecret(stateDir, OPERATOR_TOKEN_FILE)).secret.toString('hex');
}

/** The token a server with this state directory keeps, if it has made one and it is readable here. */
export async function readOperatorToken(stateDir: string): Promise<string | undefined> {
  return (await readStateSecret(stateDir, OPERATOR_TOKEN_FILE))?.toString('hex');
}

export function operatorTokenFile(stateDir: string): string {
  return join(stateDir, OPERATOR_TOKEN_FILE);
}
