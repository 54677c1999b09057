import type { Arch, FirmwareKind } from '../boot-plan.js';
import type { Mac } from '../inventory/mac.js';
import { vendorOf } from '../inventory/oui.js';
import type { MachineEvent, MachineEventInput, MachineState } from './events.js';

/** One network boot of a machine: every event from its first firmware DHCP packet until the next boot. */
export interface BootRecord {
  /** Shared by all events of this boot: `<mac hex>-<boot number>`. */
  correlationId: string;
  number: number;
  startedAt: string;
  /**
   * True once the boot got past the firmware chain (firmware DHCP → TFTP or HTTP download of iPXE →
   * iPXE DHCP): a script or Ignition request or a report from the machine. A firmware DHCP packet
   * after that is a new boot.
   */
  loaded: boolean;
}

export interface MachineRecord {
  mac: Mac;
  state: MachineState;
  stateSince: string;
  ip: string | undefined;
  arch: Arch | undefined;
  /** The boot program that started the latest boot (the firmware's own client, or an iPXE ROM). */
  firmware: FirmwareKind | undefined;
  vendor: string | undefined;
  firstSeen: string;
  lastEvent: { id: number; type: string; time: string };
  boot: BootRecord;
  installedAt: string | undefined;
  /**
   * When the boot that fetched the latest install's Ignition config started: the `installed` report
   * comes from a later boot (the installed system's), so the install's duration is measured from here.
   */
  installStartedAt?: string;
  /**
   * True from the installer's `disk-written` report (or the `installed` one) until `reprovision`: its
   * network boots go to its local disk whatever its state, so a `failed` report after the install
   * (anyone holding the machine's events token can send one) cannot make its next boot install over
   * the disk.
   */
  bootsFromDisk: boolean;
}

/** What the store stamps on an event it appends. */
export interface Stamp {
  id: number;
  /** ISO 8601 */
  time: string;
  /** `time` as epoch ms: the store has it already, and parsing the text cost ~1 µs per event. */
  ms: number;
}

export interface Step {
  /** The input stamped, with the boot's correlation id and, when it changed the state, the new state. */
  event: MachineEvent;
  record: MachineRecord | undefined;
  /** `state-changed` or `transition-rejected` events caused by `event`, in order; the store stamps them. */
  derived: MachineEventInput[];
}

/**
 * Firmware retries DISCOVER for about a minute (4, 8, 16, 32 s back-off) before giving up; a firmware
 * DHCP packet after a longer silence is a new boot even if the previous one never got past DHCP.
 */
export const BOOT_GAP_MS = 120_000;

const FIRMWARE_KINDS: readonly FirmwareKind[] = ['bios-pxe', 'uefi-pxe', 'uefi-http', 'ipxe'];
const ARCHES: readonly Arch[] = ['x86_64', 'aarch64', 'i386', 'arm32'];
/** Progress order of the states a boot passes through; `failed` is outside it. */
const STAGE_RANK: Readonly<Record<MachineState, number>> = {
  discovered: 0,
  booting: 1,
  installing: 2,
  installed: 3,
  failed: -1,
};

type Transition =
  | { kind: 'none' }
  | { kind: 'change'; to: MachineState }
  | { kind: 'reject'; to: MachineState; reason: string };

/**
 * The reducer: folds one event into a machine's record. Pure: the time comes in the stamp. Servers
 * only report what happened; this decides what it means for the machine:
 * - a firmware DHCP packet starting a new boot → `discovered` (an installed machine stays installed:
 *   its next boots go to local disk),
 * - a complete TFTP transfer or an install script served → `booting`,
 * - Ignition fetched → `installing`,
 * - the live installer reporting `disk-written` (only after booting an installer) → `installing`, and
 *   its network boots go to its disk from then on: a firmware that tries the network first must not
 *   reinstall at the reboot before the installed system can report,
 * - the machine reporting `installed` (only after booting an installer) → `installed`,
 * - `failed` from any state; operator `reprovision` takes an installed, failed or installing machine
 *   back to `discovered`, so its next boot installs again (the reports of an install in progress
 *   then are refused: it installed the Ignition config fetched before the operator asked).
 * A machine that completed an install (`bootsFromDisk`) boots from its disk until `reprovision`,
 * even once `failed`: its boots then change nothing but the history, as an installed machine's.
 * A transition the table forbids is not thrown: it comes back as a `transition-rejected` event with
 * the reason, and the state stays.
 */
export function step(previous: MachineRecord | undefined, input: MachineEventInput, stamp: Stamp): Step {
  const mac = input.mac;
  if (mac === undefined) return { event: stampEvent(input, stamp), record: previous, derived: [] };
  const firmware = firmwareOf(input);
  if (previous === undefined && !fromBootingMachine(input, firmware)) {
    // History only: an operator acting on a MAC never seen, a machine reporting without a boot this
    // server saw (its history was wiped), or a DHCP client that is not network-booting. Adopting a
    // MAC before its first boot asks for no state, so it is not refused.
    const derived =
      (input.source === 'operator' && input.type !== 'adopt') || input.source === 'machine'
        ? [
            rejection(
              input,
              stamp,
              undefined,
              input.source === 'operator' ? 'discovered' : reportedState(input.type),
              input.source === 'operator'
                ? 'this MAC has never network-booted here; a listed machine installs at its first network boot'
                : `${input.type} reported by a MAC that has never network-booted here (was the history under server.state wiped?); a machine is recorded from its first network boot`,
            ),
          ]
        : [];
    return { event: stampEvent(input, stamp), record: undefined, derived };
  }

  const nowMs = stamp.ms;
  const boot = nextBoot(previous, input, firmware, stamp, mac);
  const startsBoot = boot.number !== previous?.boot.number;
  const from = previous?.state;
  const transition = transitionFor(from, previous?.bootsFromDisk ?? false, startsBoot, input);
  // A machine seen for the first time is at least discovered, whatever it did first.
  const state = transition.kind === 'change' ? transition.to : (from ?? 'discovered');
  const changed = state !== from;
  const derived: MachineEventInput[] = [];
  if (changed) {
    derived.push({
      mac,
      ip: input.ip,
      source: 'lifecycle',
      type: 'state-changed',
      correlationId: boot.correlationId,
      detail: {
        from: from ?? null,
        to: state,
        cause: input.type,
        causeId: stamp.id,
        inStateMs: previous ? nowMs - Date.parse(previous.stateSince) : 0,
        sinceBootMs: nowMs - Date.parse(boot.startedAt),
        ...(state === 'installed' && previous?.installStartedAt
          ? { sinceInstallStartMs: nowMs - Date.parse(previous.installStartedAt) }
          : {}),
      },
    });
  }
  if (transition.kind === 'reject') {
    derived.push(rejection(input, stamp, state, transition.to, transition.reason, boot.correlationId));
  }

  const event = stampEvent(input, stamp, boot.correlationId);
  if (changed) event.state = state;
  const arch = archOf(input);
  const record: MachineRecord = {
    mac,
    state,
    stateSince: changed || !previous ? stamp.time : previous.stateSince,
    ip: addressAfter(previous, input),
    arch: arch ?? previous?.arch,
    firmware: (startsBoot ? firmware : undefined) ?? previous?.firmware ?? firmware,
    vendor: previous ? previous.vendor : vendorOf(mac),
    firstSeen: previous?.firstSeen ?? stamp.time,
    lastEvent: { id: stamp.id, type: input.type, time: stamp.time },
    boot,
    installedAt: changed && state === 'installed' ? stamp.time : previous?.installedAt,
    // Each accepted Ignition fetch: without DHCP (dhcp.mode off) a reboot before the disk was
    // written leaves the machine installing, and the install that completes is the later boot's.
    installStartedAt:
      state === 'installing' && (changed || (input.type === 'ignition-fetch' && transition.kind !== 'reject'))
        ? boot.startedAt
        : previous?.installStartedAt,
    // Set by the installer's or the installed system's report, cleared only by reprovision.
    bootsFromDisk:
      state === 'installed' ||
      (input.type === 'disk-written' && transition.kind !== 'reject') ||
      (input.type !== 'reprovision' && (previous?.bootsFromDisk ?? false)),
  };
  return { event, record, derived };
}

/**
 * The machine's address after `input`. An operator's address is not the machine's. A declined one
 * is no longer its: another host answers for it, and the machine will be offered another. A
 * released one neither: the client gave it back, and asks for one again (its next offer or ACK
 * shows it). Only views read this address; the lease checks ask the DHCP server's lease table.
 */
function addressAfter(previous: MachineRecord | undefined, input: MachineEventInput): string | undefined {
  if (input.type === 'dhcp-decline' || input.type === 'dhcp-release') return undefined;
  return (input.source === 'operator' ? undefined : input.ip) ?? previous?.ip;
}

function transitionFor(
  current: MachineState | undefined,
  bootsFromDisk: boolean,
  startsBoot: boolean,
  input: MachineEventInput,
): Transition {
  switch (input.type) {
    case 'reprovision':
      // A disk written but never reported installed (its first boot failed) is the usual reinstall.
      // An install in progress already holds the Ignition config it fetched before the operator asked
      // (often to fix it): back to discovered, so its reports are refused and its next boot installs.
      if (current === 'installed' || current === 'failed' || current === 'installing' || bootsFromDisk)
        return { kind: 'change', to: 'discovered' };
      // On its way to the installer and its Ignition not fetched yet: it will install what the
      // config says now, as the operator asks, without a change.
      return { kind: 'none' };
    case 'installed':
    case 'disk-written': {
      const to = reportedState(input.type);
      if (current === 'installed' || (to === 'installing' && bootsFromDisk)) return { kind: 'none' };
      if (current === 'booting' || current === 'installing')
        return current === to ? { kind: 'none' } : { kind: 'change', to };
      return {
        kind: 'reject',
        to,
        reason:
          current === 'discovered'
            ? `${input.type} reported while discovered: this server has served no install since the machine's last network boot or reprovision (an install in progress when it was reprovisioned does not count; its next network boot installs again)`
            : `${input.type} reported while ${current ?? 'never seen'}: only a machine this server is installing can report it`,
      };
    }
    case 'failed':
      return current === 'failed' ? { kind: 'none' } : { kind: 'change', to: 'failed' };
  }
  const stage = impliedStage(input, startsBoot);
  if (stage === undefined) return { kind: 'none' };
  if (current === 'installed' || bootsFromDisk) {
    return stage === 'installing'
      ? {
          kind: 'reject',
          to: 'installing',
          reason:
            'Ignition fetched by a machine whose disk holds an install; reprovision it to install again',
        }
      : { kind: 'none' };
  }
  if (current === undefined || current === 'failed') return { kind: 'change', to: stage };
  if (startsBoot && stage === 'discovered' && current !== 'discovered') return { kind: 'change', to: stage };
  return STAGE_RANK[stage] > STAGE_RANK[current] ? { kind: 'change', to: stage } : { kind: 'none' };
}

/** The stage a server-reported event proves the machine has reached, if any. */
function impliedStage(input: MachineEventInput, startsBoot: boolean): MachineState | undefined {
  switch (input.type) {
    case 'tftp-transfer':
      return input.detail?.outcome === 'complete' ? 'booting' : undefined;
    case 'ipxe-script':
      return input.detail?.script === 'install' ? 'booting' : undefined;
    case 'ignition-fetch':
      return 'installing';
    default:
      return input.source === 'dhcp' && startsBoot ? 'discovered' : undefined;
  }
}

function nextBoot(
  previous: MachineRecord | undefined,
  input: MachineEventInput,
  firmware: FirmwareKind | undefined,
  stamp: Stamp,
  mac: Mac,
): BootRecord {
  // UEFI HTTP Boot firmware downloads iPXE itself (an asset-download before iPXE's DHCP), so a
  // download proves nothing; the kernel and initrd come after the script, which does.
  const loadedBy = input.source === 'machine' || (input.source === 'http' && input.type !== 'asset-download');
  const startsBoot =
    previous === undefined ||
    (input.source === 'dhcp' &&
      firmware !== undefined &&
      (previous.boot.loaded || stamp.ms - Date.parse(previous.lastEvent.time) > BOOT_GAP_MS)) ||
    startsBootWithoutDhcp(previous, input, stamp);
  if (startsBoot) {
    const number = (previous?.boot.number ?? 0) + 1;
    return {
      correlationId: `${mac.replaceAll(':', '')}-${number}`,
      number,
      startedAt: stamp.time,
      loaded: loadedBy,
    };
  }
  if (!loadedBy || previous.boot.loaded) return previous.boot;
  const { correlationId, number, startedAt } = previous.boot;
  return { correlationId, number, startedAt, loaded: true };
}

const SCRIPT_FETCHES = new Set(['ipxe-script', 'unknown-machine']);

/**
 * iPXE fetching its script again (`/boot.ipxe`'s chain retry) does so within seconds; a machine
 * whose script ended (its local disk, an unknown or unavailable machine's reboot) comes back later.
 */
const SCRIPT_REFETCH_MS = 30_000;

/**
 * Where this server sees no DHCP of the boot (`dhcp.mode: off`, the LAN's DHCP chaining to
 * `/boot.ipxe`), the first thing it sees of a boot is a TFTP transfer of iPXE or the machine's script.
 * One that comes after the previous boot got further than its script (a download, Ignition, a
 * report), or a script more than SCRIPT_REFETCH_MS after the last one, starts a new boot; in the DHCP
 * modes iPXE's DHCP has started it already, so the boot is not loaded yet.
 */
function startsBootWithoutDhcp(previous: MachineRecord, input: MachineEventInput, stamp: Stamp): boolean {
  if (!previous.boot.loaded) return false;
  if (input.type === 'tftp-transfer') return true;
  if (!SCRIPT_FETCHES.has(input.type)) return false;
  return (
    !SCRIPT_FETCHES.has(previous.lastEvent.type) ||
    stamp.ms - Date.parse(previous.lastEvent.time) > SCRIPT_REFETCH_MS
  );
}

/** The state a machine's report asks for: a written disk is still `installing` until the installed system reports. */
function reportedState(type: string): MachineState {
  switch (type) {
    case 'installed':
      return 'installed';
    case 'failed':
      return 'failed';
    default:
      return 'installing';
  }
}

/** A machine talking to us while network-booting (not an operator, not a plain DHCP client). */
function fromBootingMachine(input: MachineEventInput, firmware: FirmwareKind | undefined): boolean {
  switch (input.source) {
    case 'dhcp':
      return firmware !== undefined;
    case 'tftp':
    case 'http':
      return true;
    default:
      return false;
  }
}

/**
 * The event as stored: the input's fields, the stamp, the boot. Built field by field, not by object
 * spread: spreading cost about 5 µs per object here (Node 20), the largest cost of recording an event.
 */
export function stampEvent(input: MachineEventInput, stamp: Stamp, correlationId?: string): MachineEvent {
  return {
    id: stamp.id,
    time: stamp.time,
    mac: input.mac,
    ip: input.ip,
    source: input.source,
    type: input.type,
    correlationId: correlationId ?? input.correlationId,
    detail: input.detail,
  };
}

function rejection(
  input: MachineEventInput,
  stamp: Stamp,
  from: MachineState | undefined,
  to: MachineState,
  reason: string,
  correlationId?: string,
): MachineEventInput {
  return {
    mac: input.mac,
    ip: input.ip,
    source: 'lifecycle',
    type: 'transition-rejected',
    correlationId,
    detail: { from: from ?? null, to, cause: input.type, causeId: stamp.id, reason },
  };
}

function firmwareOf(input: MachineEventInput): FirmwareKind | undefined {
  const value = input.detail?.firmware;
  return FIRMWARE_KINDS.find((kind) => kind === value);
}

function archOf(input: MachineEventInput): Arch | undefined {
  const value = input.detail?.arch;
  // BIOS iPXE (undionly.kpxe) is a 32-bit build and says i386 on every PC: iPXE's arch, not the machine's.
  if (value === 'i386' && input.detail?.platform === 'pcbios') return undefined;
  return ARCHES.find((arch) => arch === value);
}
