import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { ConfigStatus } from '../inventory/source.js';
import type { MachineEvent } from '../lifecycle/events.js';
import { MACHINE_STATES } from '../lifecycle/events.js';
import type { Lifecycle } from '../lifecycle/store.js';
import type { TftpStats } from '../tftp/server.js';

declare module 'fastify' {
  interface FastifyReply {
    /**
     * For a reply its route hijacked (a stream): counts the request once the connection closes, as
     * fastify's onResponse runs only for a response that finished, and a stream is mostly ended by
     * its client. Absent when the metrics plugin is not registered.
     */
    countWhenClosed?: () => void;
  }
}

/** The DHCP server's counters (src/dhcp/server.ts DhcpStats), read at every scrape. */
export interface DhcpCounters {
  messages: { type: string; decision: string; count: number }[];
  malformed: { reason: string; count: number }[];
  boundLeases: number;
}

/** The TFTP server's counters that /metrics reads at every scrape. */
export type TftpCounters = Pick<
  TftpStats,
  'activeTransfers' | 'refusalsSuppressed' | 'retransmittedPackets' | 'cacheBytes' | 'errors' | 'transfers'
>;

export interface MetricsOptions {
  lifecycle: Lifecycle;
  /** Absent when DHCP is off. */
  /** Asked once per scrape: the DHCP server runs on a thread of its own (dhcp/thread.ts). */
  dhcpStats?: (() => Promise<DhcpCounters>) | undefined;
  tftpStats?: (() => TftpCounters) | undefined;
  configStatus?: (() => ConfigStatus) | undefined;
}

/** TftpCounters.errors by the `reason` label of rackboot_tftp_dropped_total. */
const TFTP_DROP_REASONS = {
  malformed: 'malformed',
  foreignTid: 'foreign_tid',
  sourcePortZero: 'source_port_zero',
  busy: 'busy',
  duplicateAcks: 'duplicate_ack',
} as const satisfies Partial<Record<keyof TftpCounters['errors'], string>>;

/** Outcomes of a TFTP transfer that are not a success (`probe` is EDK2's size query, by design). */
const TFTP_ERROR_OUTCOMES = new Set(['aborted', 'timeout', 'refused']);
/** A Fedora CoreOS install over a LAN takes minutes; TCG-emulated labs take longer. */
const INSTALL_SECONDS_BUCKETS = [30, 60, 120, 180, 300, 450, 600, 900, 1200, 1800, 3600];

/**
 * `/metrics` in Prometheus text format. DHCP counters come from the DHCP server's stats() at scrape
 * time; TFTP transfers and the install-time histogram from the durable events (the TFTP server
 * records every transfer with its outcome and bytes); HTTP requests from an onResponse hook on the
 * whole app; machines by state from the lifecycle's memory; plus Node process metrics.
 */
export const metricsRoutes: FastifyPluginAsync<MetricsOptions> = async (app, options) => {
  const { lifecycle } = options;
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  // Read by the DHCP collectors below; fetched before each scrape, since prom-client's collect()
  // functions are called one after the other and the thread answers asynchronously.
  let dhcpCounters: DhcpCounters = { messages: [], malformed: [], boundLeases: 0 };
  let dhcpUp = true;
  if (options.dhcpStats) {
    scrapeTimeValue(registry, Gauge, {
      name: 'rackboot_dhcp_up',
      help: 'Whether the DHCP server answered this scrape: 0 while its thread is started again after dying (see the log); the other DHCP metrics then hold their last values.',
      read: () => (dhcpUp ? 1 : 0),
    });
    new Counter({
      name: 'rackboot_dhcp_messages_total',
      help: 'DHCP messages received, by message type and what the server decided.',
      labelNames: ['type', 'decision'],
      registers: [registry],
      collect() {
        this.reset();
        for (const { type, decision, count } of dhcpCounters.messages) this.inc({ type, decision }, count);
      },
    });
    new Counter({
      name: 'rackboot_dhcp_malformed_total',
      help: 'DHCP packets dropped before a decision, by reason.',
      labelNames: ['reason'],
      registers: [registry],
      collect() {
        this.reset();
        for (const { reason, count } of dhcpCounters.malformed) this.inc({ reason }, count);
      },
    });
    scrapeTimeValue(registry, Gauge, {
      name: 'rackboot_dhcp_bound_leases',
      help: 'Bound, unexpired leases (authoritative mode).',
      read: () => dhcpCounters.boundLeases,
    });
  }

  const tftpStats = options.tftpStats;
  if (tftpStats) {
    // What no transfer event tells: requests turned away before a transfer began (busy is the
    // one an operator sizing max_transfers needs), and the server's own health.
    new Counter({
      name: 'rackboot_tftp_dropped_total',
      help: 'TFTP packets dropped or answered without a transfer, by reason (malformed, foreign_tid, source_port_zero, busy: a request over max_transfers or max_transfers_per_client, duplicate_ack).',
      labelNames: ['reason'],
      registers: [registry],
      collect() {
        this.reset();
        const { errors } = tftpStats();
        for (const [key, reason] of Object.entries(TFTP_DROP_REASONS))
          this.inc({ reason }, errors[key as keyof typeof TFTP_DROP_REASONS]);
      },
    });
    scrapeTimeValue(registry, Gauge, {
      name: 'rackboot_tftp_active_transfers',
      help: 'TFTP transfers in progress.',
      read: () => tftpStats().activeTransfers,
    });
    scrapeTimeValue(registry, Counter, {
      name: 'rackboot_tftp_retransmitted_packets_total',
      help: 'TFTP DATA and OACK packets sent again (a timeout, or blocks resent after a partial ACK).',
      read: () => tftpStats().retransmittedPackets,
    });
    scrapeTimeValue(registry, Counter, {
      name: 'rackboot_tftp_refusals_suppressed_total',
      help: 'TFTP refusals answered but not recorded as events (a repeat of the same client, file and reason within 10 s, or over the record budgets).',
      read: () => tftpStats().refusalsSuppressed,
    });
    scrapeTimeValue(registry, Counter, {
      name: 'rackboot_tftp_io_errors_total',
      help: 'Socket or disk errors that ended a TFTP transfer or a send.',
      read: () => tftpStats().errors.io,
    });
    scrapeTimeValue(registry, Gauge, {
      name: 'rackboot_tftp_cache_bytes',
      help: 'File contents the TFTP server holds in memory (cached, or held by open transfers).',
      read: () => tftpStats().cacheBytes,
    });
  }

  /**
   * Refusals come from the TFTP server's own count when there is one: a refusal left out of the
   * history (a repeat, or over the record budgets) is counted by the next recorded one only if that
   * comes, and its key is still remembered, so counting events left some out.
   */
  const liveRefusals = () => {
    let counted = 0;
    return (counter: Counter) => {
      if (!tftpStats) return;
      const refused = tftpStats().transfers.refused;
      if (refused > counted) counter.inc({ outcome: 'refused' }, refused - counted);
      counted = refused;
    };
  };
  const addTransferRefusals = liveRefusals();
  const addErrorRefusals = liveRefusals();
  const tftpTransfers = new Counter({
    name: 'rackboot_tftp_transfers_total',
    help: 'TFTP transfers finished, by outcome (complete, probe, aborted, timeout, refused).',
    labelNames: ['outcome'],
    registers: [registry],
    collect() {
      addTransferRefusals(this);
    },
  });
  const tftpBytes = new Counter({
    name: 'rackboot_tftp_bytes_total',
    help: 'Bytes sent by TFTP transfers, by outcome.',
    labelNames: ['outcome'],
    registers: [registry],
  });
  const tftpErrors = new Counter({
    name: 'rackboot_tftp_errors_total',
    help: 'TFTP transfers that failed (aborted, timeout, refused), by outcome.',
    labelNames: ['outcome'],
    registers: [registry],
    collect() {
      addErrorRefusals(this);
    },
  });
  const countRequest = scrapeTimeCounter(registry, {
    name: 'rackboot_http_requests_total',
    help: 'HTTP requests answered, by method, route pattern and status code.',
    labelNames: ['method', 'route', 'status'],
  });
  const countEventSource = scrapeTimeCounter(registry, {
    name: 'rackboot_events_total',
    help: 'Provisioning events recorded, by source.',
    labelNames: ['source'],
  });
  const installSeconds = new Histogram({
    name: 'rackboot_install_duration_seconds',
    help: "Time from the first DHCP packet of the boot that fetched the install's Ignition config to the installed system's report.",
    buckets: INSTALL_SECONDS_BUCKETS,
    registers: [registry],
  });
  new Gauge({
    name: 'rackboot_machines',
    help: 'Machines by provisioning state.',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const counts = new Map<string, number>(MACHINE_STATES.map((state) => [state, 0]));
      for (const machine of lifecycle.machines())
        counts.set(machine.state, (counts.get(machine.state) ?? 0) + 1);
      for (const [state, count] of counts) this.set({ state }, count);
    },
  });

  new Counter({
    name: 'rackboot_history_unstored_events_total',
    help: 'Events the history could not write (disk full, I/O error); the machine states still changed.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(lifecycle.historyHealth().unstoredEvents);
    },
  });
  new Counter({
    name: 'rackboot_history_writer_restarts_total',
    help: 'History writer threads started in place of one that died.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(lifecycle.historyHealth().writerRestarts);
    },
  });
  new Gauge({
    name: 'rackboot_history_writing',
    help: '1 while the history is written; 0 once writer threads kept dying (until rackboot restarts).',
    registers: [registry],
    collect() {
      this.set(lifecycle.historyHealth().writing ? 1 : 0);
    },
  });

  const configStatus = options.configStatus;
  if (configStatus) {
    // An edit the server refuses keeps the previous config serving; only the log said so.
    scrapeTimeValue(registry, Gauge, {
      name: 'rackboot_config_rejected',
      help: '1 while the config files hold an edit the server refuses (the previous config keeps serving; the log and `rackboot validate` name the problems), else 0.',
      read: () => (configStatus().rejected ? 1 : 0),
    });
    scrapeTimeValue(registry, Gauge, {
      name: 'rackboot_config_applied_timestamp_seconds',
      help: 'When the config in force was loaded (Unix time).',
      read: () => configStatus().appliedAt / 1000,
    });
  }

  const countEvent = (event: MachineEvent) => {
    countEventSource(event.source, { source: event.source });
    const detail = event.detail ?? {};
    if (event.type === 'tftp-transfer' && typeof detail.outcome === 'string') {
      const outcome = detail.outcome;
      // A refusal recorded after repeats that were not (src/tftp/server.ts) counts them too.
      const repeats = (count: unknown) => (typeof count === 'number' ? count : 0);
      const transfers = 1 + repeats(detail.suppressed) + repeats(detail.suppressedElsewhere);
      const counted = !(outcome === 'refused' && tftpStats);
      if (counted) tftpTransfers.inc({ outcome }, transfers);
      if (typeof detail.bytes === 'number') tftpBytes.inc({ outcome }, detail.bytes);
      if (counted && TFTP_ERROR_OUTCOMES.has(outcome)) tftpErrors.inc({ outcome }, transfers);
    } else if (event.type === 'state-changed' && detail.to === 'installed') {
      // The report comes from the installed system's boot; the install began at an earlier one.
      const installMs = detail.sinceInstallStartMs ?? detail.sinceBootMs;
      if (typeof installMs === 'number') installSeconds.observe(installMs / 1000);
    }
  };
  const unsubscribe = lifecycle.subscribe(countEvent);
  app.addHook('onClose', async () => unsubscribe());

  app.get('/metrics', async (_request, reply) => {
    // While a dead DHCP thread is started again, the last counters stand and rackboot_dhcp_up says so.
    if (options.dhcpStats) {
      const fetched = await options.dhcpStats().catch(() => undefined);
      dhcpUp = fetched !== undefined;
      dhcpCounters = fetched ?? dhcpCounters;
    }
    reply.type(registry.contentType);
    return registry.metrics();
  });

  const countResponse = (request: FastifyRequest, reply: FastifyReply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    countRequest(`${request.method} ${reply.statusCode} ${route}`, {
      method: request.method,
      route,
      status: String(reply.statusCode),
    });
  };
  app.addHook('onResponse', (request, reply, done) => {
    countResponse(request, reply);
    done();
  });
  // On the prototype, not a hook: the routes that stream pay for it, a boot script does not.
  app.decorateReply('countWhenClosed', function (this: FastifyReply) {
    // A stream the server ended (app close) finished, and onResponse counted it.
    this.raw.once('close', () => {
      if (!this.raw.writableFinished) countResponse(this.request, this);
    });
  });
};
/**
 * A counter kept in a plain map and handed to prom-client at scrape time: prom-client's per-call
 * label hashing showed up in every boot script's profile (bench/http) and per recorded event under
 * an event flood (bench/events). Returns `count(key, labels)`; `labels` are read for a new key only.
 */
function scrapeTimeCounter<Label extends string>(
  registry: Registry,
  metric: { name: string; help: string; labelNames: Label[] },
): (key: string, labels: Record<Label, string>) => void {
  const counts = new Map<string, { labels: Record<Label, string>; count: number }>();
  new Counter({
    ...metric,
    registers: [registry],
    collect() {
      this.reset();
      for (const { labels, count } of counts.values()) this.inc(labels, count);
    },
  });
  return (key, labels) => {
    const counted = counts.get(key);
    if (counted) counted.count += 1;
    else counts.set(key, { labels, count: 1 });
  };
}

/** A metric without labels whose value a server's stats() gives at each scrape: a total or a gauge. */
function scrapeTimeValue(
  registry: Registry,
  kind: typeof Counter | typeof Gauge,
  metric: { name: string; help: string; read: () => number },
): void {
  const { read, ...described } = metric;
  if (kind === Counter) {
    new Counter({
      ...described,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  } else {
    new Gauge({
      ...described,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  }
}

// Request counting must see every route of the app, so this plugin runs in the context it is
// registered in (what fastify-plugin sets): register it first, before the plugins it should count.
Object.assign(metricsRoutes, { [Symbol.for('skip-override')]: true });
