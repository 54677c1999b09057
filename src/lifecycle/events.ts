import type { Mac } from '../inventory/mac.js';

/** Provisioning states (CONTRACT.md): discovered → booting → installing → installed; failed from any. */
export const MACHINE_STATES = ['discovered', 'booting', 'installing', 'installed', 'failed'] as const;
export type MachineState = (typeof MACHINE_STATES)[number];

export type EventSource = 'dhcp' | 'tftp' | 'http' | 'machine' | 'operator' | 'lifecycle';

/**
 * What a server reports. The lifecycle store stamps `id` and `time` and derives state changes;
 * servers never set a machine's state directly.
 */
export interface MachineEventInput {
  /** undefined for events that cannot be tied to a machine (e.g. a TFTP client without a DHCP record). */
  mac: Mac | undefined;
  ip?: string | undefined;
  source: EventSource;
  /**
   * e.g. `dhcp-offer`, `tftp-transfer`, `ipxe-script`, `ignition-fetch`, `installed`; the lifecycle adds
   * `state-changed` (detail: from, to, cause, causeId) and `transition-rejected` (detail: reason).
   */
  type: string;
  /** Ties together all events of one boot (DHCP xid → TFTP → HTTP). */
  correlationId?: string | undefined;
  detail?: Record<string, unknown>;
}

export interface MachineEvent extends MachineEventInput {
  id: number;
  /** ISO 8601 */
  time: string;
  /** The state after this event, when the event changed it. */
  state?: MachineState;
}

/**
 * Records an event. The promise resolves once the event is durable; callers on a hot path that do
 * not need durability may ignore it (but must not let it reject unhandled).
 */
export type RecordEvent = (event: MachineEventInput) => Promise<void>;
