/**
 * The DHCP server's thread (started by thread.ts). It runs server.ts unchanged; what the server
 * would hand the main thread directly goes there as messages, gathered per turn of this thread's
 * event loop: provisioning events, address-book changes and log lines.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { pino } from 'pino';
import { createBootDecision } from '../inventory/decision.js';
import { deepFreeze } from '../inventory/load.js';
import type { Config } from '../inventory/schema.js';
import type { MachineEventInput } from '../lifecycle/events.js';
import { StateError } from '../state-error.js';
import { sendableLogArguments } from '../worker-thread.js';
import type { AddressNews } from './address-book.js';
import { type DhcpServer, startDhcpServer } from './server.js';
import type { DhcpThreadData, FromDhcpThread, ToDhcpThread } from './thread.js';

const port = parentPort;
if (!port) throw new Error('dhcp/worker.ts runs as a worker thread (dhcp/thread.ts starts it)');
const data = workerData as DhcpThreadData;
const post = (message: FromDhcpThread) => port.postMessage(message);

let config = deepFreeze(data.config) as Config;
let events: MachineEventInput[] = [];
let addresses: AddressNews[] = [];
let sendScheduled = false;
/** One message per turn: a DORA's two events and lease changes cost one postMessage, not four. */
const sendNews = () => {
  sendScheduled = false;
  if (events.length === 0 && addresses.length === 0) return;
  post({ kind: 'news', events, addresses });
  events = [];
  addresses = [];
};
const scheduleNews = () => {
  if (sendScheduled) return;
  sendScheduled = true;
  setImmediate(sendNews);
};

// Pino filters by level here, so a debug line per packet costs nothing unless debug is on; what
// passes goes to the main thread's component logger as the call's own arguments.
const logger = pino({
  level: data.logLevel,
  hooks: {
    logMethod(args, _method, level) {
      try {
        post({ kind: 'log', level, args: sendableLogArguments(args) });
      } catch (error) {
        post({ kind: 'log', level, args: [`${String(args.at(-1))} (log fields not sendable: ${error})`] });
      }
    },
  },
});

let server: DhcpServer;
try {
  server = await startDhcpServer({
    config: () => config,
    // A DHCP answer never depends on a machine's state (the iPXE script decides installer or local
    // disk), so this thread needs no copy of the lifecycle.
    decision: createBootDecision(
      () => config,
      () => undefined,
      () => false,
    ),
    record: async (event) => {
      events.push(event);
      scheduleNews();
    },
    onAddressNews: (news) => {
      addresses.push(news);
      scheduleNews();
    },
    logger,
  });
} catch (error) {
  const {
    message,
    code,
    syscall,
    address,
    port: failedPort,
  } = error as NodeJS.ErrnoException & {
    address?: string;
    port?: number;
  };
  sendNews();
  post({
    kind: 'failed',
    error: { message, code, syscall, address, port: failedPort, state: error instanceof StateError },
  });
  process.exit(1);
}
sendNews();
post({ kind: 'ready' });

port.on('message', (message: ToDhcpThread) => {
  switch (message.kind) {
    case 'config':
      config = deepFreeze(message.config) as Config;
      break;
    case 'stats':
      void server.stats().then((stats) => post({ kind: 'stats', id: message.id, stats }));
      break;
    case 'close':
      void server.close().finally(() => {
        sendNews();
        post({ kind: 'closed' });
        port.close();
      });
      break;
  }
});
