import type { ChildProcess } from 'node:child_process';
import type { MachineEvent } from '../lifecycle/events.js';
import type { NamespaceHandle } from './network.js';

/**
 * rackboot's HTTP API as seen from the lab LAN. rackboot listens inside the lab namespace only, so
 * the harness talks to it through curl run in that namespace (no address or route is added to the
 * host). Every call is bounded in time.
 */

const CALL_TIMEOUT_SECONDS = 10;

export interface ApiResponse {
  status: number;
  body: unknown;
}

export interface MachineView {
  mac: string;
  state: string | null;
  events: MachineEvent[];
}

export interface LabApi {
  get(path: string): Promise<ApiResponse>;
  machine(mac: string): Promise<MachineView>;
  /** Follows the SSE stream; `onEvent` sees each event once. Ends with the lab or `stop()`. */
  followEvents(onEvent: (event: MachineEvent) => void, hardLimitSeconds: number): { stop(): void };
}

export function labApi(namespace: NamespaceHandle, baseUrl: string): LabApi {
  const get = async (path: string): Promise<ApiResponse> => {
    const args = ['-sS', '-m', String(CALL_TIMEOUT_SECONDS), '-w', '\n%{http_code}', `${baseUrl}${path}`];
    const output = await namespace.exec('curl', args, (CALL_TIMEOUT_SECONDS + 5) * 1000);
    const split = output.lastIndexOf('\n');
    const text = output.slice(0, split);
    const status = Number(output.slice(split + 1));
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    return { status, body: parsed };
  };
  return {
    get,
    async machine(mac) {
      const response = await get(`/api/v1/machines/${mac}`);
      if (response.status !== 200) {
        throw new Error(`GET /api/v1/machines/${mac}: ${response.status} ${JSON.stringify(response.body)}`);
      }
      return response.body as MachineView;
    },
    followEvents(onEvent, hardLimitSeconds) {
      const child: ChildProcess = namespace.spawn('curl', ['-sSN', `${baseUrl}/api/v1/events`], {
        hardLimitSeconds,
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      let partial = '';
      child.stdout?.on('data', (chunk: Buffer) => {
        const lines = (partial + chunk.toString('utf8')).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) {
          if (!line.startsWith('data:')) continue;
          try {
            onEvent(JSON.parse(line.slice(5)) as MachineEvent);
          } catch {
            // a partial or foreign line: the stream resumes with the next event
          }
        }
      });
      return { stop: () => child.kill('SIGTERM') };
    },
  };
}
