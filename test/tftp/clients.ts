import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { run } from '../helpers/netns.js';

/** The real TFTP clients the acceptance list names, each fetching one file to `output`. */
export type ClientKind = 'curl' | 'curl-1468' | 'tftp-hpa' | 'atftp';
export const CLIENT_KINDS: ClientKind[] = ['curl', 'curl-1468', 'tftp-hpa', 'atftp'];

export function clientCommand(kind: ClientKind, host: string, port: number, file: string, output: string) {
  switch (kind) {
    case 'curl':
      return ['curl', '-sS', '--max-time', '300', '-o', output, `tftp://${host}:${port}/${file}`];
    case 'curl-1468':
      return [
        'curl',
        '-sS',
        '--max-time',
        '120',
        '--tftp-blksize',
        '1468',
        '-o',
        output,
        `tftp://${host}:${port}/${file}`,
      ];
    case 'tftp-hpa':
      return ['tftp', host, String(port), '-m', 'binary', '-c', 'get', file, output];
    case 'atftp':
      return ['atftp', '-g', '-r', file, '-l', output, host, String(port)];
  }
}

/** Runs the client (optionally through a prefix such as `ip netns exec NS`) and returns its time. */
export async function fetchWith(
  kind: ClientKind,
  target: { host: string; port: number; file: string; output: string; prefix?: string[] },
): Promise<number> {
  const [command, ...args] = [
    ...(target.prefix ?? []),
    ...clientCommand(kind, target.host, target.port, target.file, target.output),
  ];
  const startedAt = performance.now();
  await run(command ?? 'false', args, 320_000);
  return performance.now() - startedAt;
}

export async function sha256OfFile(path: string): Promise<string> {
  return sha256(await readFile(path).catch(() => Buffer.from('missing')));
}

export function sha256(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}
