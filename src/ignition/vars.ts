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
  const macPath = macInUrl(assignment.mac);
  const ignitionToken = secrets.tokenFor(assignment.mac, 'ignition', now);
  const eventsToken = secrets.tokenFor(assignment.mac, 'events', now);
  return {
    mac: assignment.mac,
    hostname: assignment.hostname ?? '',
    ip: assignment.ip ?? '',
    profile: assignment.profile,
    base_url: baseUrl,
    // The installed system's Ignition config, and the live installer's own: the hook that reports
    // `disk-written` once coreos-installer has written the disk.
    ignition_url: `${baseUrl}/ignition/${macPath}.ign?token=${ignitionToken}`,
    installer_ignition_url: `${baseUrl}/ignition/installer/${macPath}.ign?token=${ignitionToken}`,
    // CONTRACT.md's `POST /api/v1/machines/{mac}/events`.
    events_url: `${baseUrl}/api/v1/machines/${macPath}/events?token=${eventsToken}`,
    vars: machineEntry(config, assignment.mac)?.vars,
  };
}
