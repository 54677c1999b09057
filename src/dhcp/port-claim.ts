import { createConnection, createServer } from 'node:net';

/** Who holds a claim, as the claim's socket tells a server that finds it taken. */
export interface DhcpPortHolder {
  pid: number;
  state: string;
}

export type DhcpPortClaim =
  | { claimed: true; release: () => Promise<void> }
  | { claimed: false; heldBy: DhcpPortHolder | undefined };

/** How long a server that finds the claim taken waits for the holder to say who it is. */
const HOLDER_ANSWER_MS = 1000;

/**
 * The DHCP sockets are bound shared (SO_REUSEADDR), to run beside a LAN DHCP server on the same
 * host, so a second rackboot binds them too, and both answer every client: in authoritative mode
 * from two lease tables, handing out the same addresses. A listening abstract Unix socket named
 * after the port is the claim: Linux keeps abstract names per network namespace, as it does ports
 * (a container with a network of its own claims its own), and frees it when the process ends,
 * however it ends. Whoever connects to it is told the holder's PID and state directory.
 */
export async function claimDhcpPort(port: number, holder: DhcpPortHolder): Promise<DhcpPortClaim> {
  const name = claimName(port);
  const server = createServer((socket) => socket.end(JSON.stringify(holder)));
  const taken = await new Promise<boolean>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      error.code === 'EADDRINUSE' ? resolve(true) : reject(error),
    );
    server.listen(name, () => resolve(false));
  });
  if (taken) return { claimed: false, heldBy: await askHolder(name) };
  // A peer that connects and never reads must not keep the socket (and the close) waiting.
  server.on('connection', (socket) => socket.setTimeout(HOLDER_ANSWER_MS, () => socket.destroy()));
  return {
    claimed: true,
    release: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function claimName(port: number): string {
  return `\0rackboot-dhcp-port-${port}`;
}

async function askHolder(name: string): Promise<DhcpPortHolder | undefined> {
  return new Promise((resolve) => {
    const socket = createConnection(name);
    let answer = '';
    socket.setEncoding('utf8');
    socket.setTimeout(HOLDER_ANSWER_MS, () => socket.destroy());
    socket.on('data', (chunk: string) => {
      answer += chunk;
    });
    socket.on('error', () => resolve(undefined));
    socket.on('close', () => resolve(parseHolder(answer)));
  });
}

function parseHolder(answer: string): DhcpPortHolder | undefined {
  try {
    const { pid, state } = JSON.parse(answer) as Partial<DhcpPortHolder>;
    return typeof pid === 'number' && typeof state === 'string' ? { pid, state } : undefined;
  } catch {
    return undefined;
  }
}
