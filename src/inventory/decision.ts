import type { BootDecision, MachineAssignment } from '../boot-plan.js';
import type { MachineState } from '../lifecycle/events.js';
import type { Mac } from './mac.js';
import type { Config, MachineConfig } from './schema.js';

/**
 * The inventory's BootDecision: a listed machine, else the `unknown_machines` profile, else nothing.
 * Reads the config snapshot in force at each call, so a hot reload takes effect on the next packet.
 * Without `bootsFromDisk`, an installed machine is taken to boot from its disk.
 */
export function createBootDecision(
  currentConfig: () => Config,
  stateOf: (mac: Mac) => MachineState | undefined,
  bootsFromDisk: (mac: Mac) => boolean = (mac) => stateOf(mac) === 'installed',
): BootDecision {
  // One index per config snapshot; snapshots are frozen and replaced whole, so identity is the key.
  const indexes = new WeakMap<Config, Map<Mac, MachineConfig>>();
  const machinesByMac = (config: Config) => {
    let index = indexes.get(config);
    if (!index) {
      index = new Map(config.machines.map((machine) => [machine.mac, machine]));
      indexes.set(config, index);
    }
    return index;
  };

  return {
    assignmentFor(mac: Mac): MachineAssignment | undefined {
      const config = currentConfig();
      const listed = machinesByMac(config).get(mac);
      if (listed) {
        return {
          mac,
          hostname: listed.hostname,
          profile: listed.profile,
          ip: listed.ip,
          listed: true,
          state: stateOf(mac),
          bootsFromDisk: bootsFromDisk(mac),
        };
      }
      if (config.unknown_machines === 'ignore') return undefined;
      return {
        mac,
        hostname: undefined,
        profile: config.unknown_machines,
        ip: undefined,
        listed: false,
        state: stateOf(mac),
        bootsFromDisk: bootsFromDisk(mac),
      };
    },
  };
}
