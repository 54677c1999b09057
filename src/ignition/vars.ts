import type { MachineAssignment } from '../boot-plan.js';
import type { Mac } from '../inventory/mac.js';
import type { Config, MachineConfig } from '../inventory/schema.js';
import type { TemplateVars } from './template.js';
import type { MachineSecrets } from './tokens.js';

/** `http://<server.address>:<http.port>`: the host in every URL handed to machines (common brief). */
export function baseUrlOf(config: Config): string {
  return `http://${config.server.address}:${config.server.http.port}`;
}

/** The MAC as it appears in URLs: iPXE's `${mac:hexhyp}` spelling, safe in paths and kernel command lines. */
export function macInUrl(mac: Mac): string {
  return mac.replaceAll(':', '-');
}

/**
 * A machine's Ignition config: `installed`, the installed system's (`{{ignition_url}}`), or
 * `installer`, the live installer environment's own (`{{installer_ignition_url}}`): the hook that
 * reports `disk-written` once coreos-installer has written the disk.
 */
export function ignitionUrl(
  baseUrl: string,
  mac: Mac,
  token: string,
  system: 'installed' | 'installer' = 'installed',
): string {
  const directory = system === 'installer' ? 'ignition/installer' : 'ignition';
  return `${baseUrl}/${directory}/${macInUrl(mac)}.ign?token=${token}`;
}

/** CONTRACT.md's `POST /api/v1/machines/{mac}/events`, with the machine's token. */
export function eventsUrl(baseUrl: string, mac: Mac, token: string): string {
  return `${baseUrl}/api/v1/machines/${macInUrl(mac)}/events?token=${token}`;
}

const machineIndexes = new WeakMap<Config, Map<Mac, MachineConfig>>();

/** The machine's entry in `machines`, indexed once per config snapshot (snapshots are replaced whole). */
export function machineEntry(config: Config, mac: Mac): MachineConfig | undefined {
  let index = machineIndexes.get(config);
  if (!index) {
    index = new Map(config.machines.map((machine) => [machine.mac, machine]));
    machineIndexes.set(config, index);
  }
  return index.get(mac);
}

/** Template variables of one machine (CONTRACT.md), with its credentials from `secrets` as of `now`. */
export function machineVars(
  config: Config,
  assignment: MachineAssignment,
  secrets: Pick<MachineSecrets, 'tokenFor'>,
  now: number,
): TemplateVars {
  const baseUrl = baseUrlOf(config);
  const ignitionToken = secrets.tokenFor(assignment.mac, 'ignition', now);
  return {
    mac: assignment.mac,
    hostname: assignment.hostname ?? '',
    ip: assignment.ip ?? '',
    profile: assignment.profile,
    base_url: baseUrl,
    ignition_url: ignitionUrl(baseUrl, assignment.mac, ignitionToken),
    installer_ignition_url: ignitionUrl(baseUrl, assignment.mac, ignitionToken, 'installer'),
    events_url: eventsUrl(baseUrl, assignment.mac, secrets.tokenFor(assignment.mac, 'events', now)),
    vars: machineEntry(config, assignment.mac)?.vars,
  };
}
