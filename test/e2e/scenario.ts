import type { Test as Tap } from 'tap';
import { isRunning, runCommand } from '../../src/lab/command.js';
import { type BootOutcome, type Lab, type LabOptions, startLab } from '../../src/lab/lab.js';
import { ignitionProblem, type LabMachine } from '../../src/lab/lab-config.js';
import { formatTimeline } from '../../src/lab/timings.js';
import type { MachineEvent } from '../../src/lifecycle/events.js';

/**
 * Shared steps of the real-firmware scenarios: one lab per test file, torn down (and the teardown
 * verified) whatever happens; outcome and event-sequence assertions that print the serial tail and
 * the recorded events when they fail.
 */

/** Generous: under TCG on 2 shared cores a UEFI boot takes 20–40 s, more when boots run together. */
export const BOOT_TIMEOUT_MS = 300_000;

/**
 * Starts the lab; its teardown closes it whatever happened (close is idempotent). The file's last
 * subtest, `verifyCleanup`, closes it first and checks nothing of it is left.
 */
export async function scenarioLab(t: Tap, options: LabOptions): Promise<Lab> {
  const lab = await startLab({ progress: (message) => t.comment(message), ...options });
  t.teardown(() => lab.close());
  return lab;
}

/** Last subtest of each file: after close(), no namespace, tap, bridge or process of the lab remains. */
export function verifyCleanup(t: Tap, lab: Lab): void {
  t.test('cleanup leaves no namespace, tap, bridge or QEMU behind', async (t) => {
    const pids = lab.livePids();
    t.ok(pids.length > 0, 'the servers were running until now');
    await lab.close();
    const namespaces = await runCommand('ip', ['netns', 'list']);
    // Taps and the bridge live inside the lab namespaces: no namespace, no tap, no bridge.
    t.same(
      namespaces.split('\n').filter((line) => line.startsWith(lab.network.namespace)),
      [],
      'no lab namespace remains',
    );
    t.same(pids.filter(isRunning), [], 'no QEMU or server process of the lab remains');
    const links = await runCommand('ip', ['-o', 'link', 'show']);
    t.notMatch(links, /rbtap|rblab/, 'no lab device leaked into the host namespace');
  });
}

export function describeOutcome(outcome: BootOutcome): string {
  return `${outcome.machine.hostname} (${outcome.machine.firmware}): ${outcome.result}; ${formatTimeline(outcome.timeline)}`;
}

/** The guest reported installed and the Ignition it printed is JSON naming its own MAC. */
export function assertInstalled(t: Tap, outcome: BootOutcome): void {
  t.comment(describeOutcome(outcome));
  t.equal(outcome.result, 'installed', `${outcome.machine.hostname} installed`, {
    detail: outcome.detail,
    serial: outcome.tail,
  });
  t.equal(
    outcome.ignition === undefined
      ? 'no Ignition printed'
      : ignitionProblem(outcome.ignition, outcome.machine.mac),
    undefined,
    `${outcome.machine.hostname} fetched its own Ignition`,
  );
}

export interface ExpectedEvent {
  type: string;
  /** Fields of `detail` that must match (e.g. `{ firmware: 'uefi-pxe' }`). */
  detail?: Record<string, unknown>;
}

function matches(event: MachineEvent, expected: ExpectedEvent): boolean {
  if (event.type !== expected.type) return false;
  return Object.entries(expected.detail ?? {}).every(([key, value]) => event.detail?.[key] === value);
}

export function describeEvents(events: readonly MachineEvent[]): string[] {
  return events.map(
    (event) =>
      `${event.id} ${event.type}${event.state ? ` [${event.state}]` : ''} ${JSON.stringify(event.detail ?? {})}`,
  );
}

/**
 * The expected events appear in this order (others may come between). Returns the events after
 * the last match, so a caller can check what a later boot did.
 */
export function assertEventSequence(
  t: Tap,
  events: readonly MachineEvent[],
  expected: readonly ExpectedEvent[],
  message: string,
): MachineEvent[] {
  const ordered = [...events].sort((a, b) => a.id - b.id);
  let position = 0;
  for (const step of expected) {
    const found = ordered.findIndex((event, index) => index >= position && matches(event, step));
    if (found < 0) {
      t.fail(`${message}: no ${JSON.stringify(step)} after event #${position}`, {
        events: describeEvents(ordered),
      });
      return [];
    }
    position = found + 1;
  }
  t.ok(true, message);
  return ordered.slice(position);
}

/** Events of one machine from the API (GET /api/v1/machines/{mac}). */
export async function machineEvents(
  lab: Lab,
  machine: LabMachine,
): Promise<{ state: string | null; events: MachineEvent[] }> {
  if (!lab.api) throw new Error('not a rackboot lab');
  const view = await lab.api.machine(machine.mac);
  return { state: view.state, events: [...view.events].sort((a, b) => a.id - b.id) };
}

/** iPXE fetching the per-machine script, kernel and initrd, then the guest's Ignition and report. */
export const INSTALL_TAIL: readonly ExpectedEvent[] = [
  { type: 'ipxe-script', detail: { script: 'install' } },
  { type: 'asset-download', detail: { file: 'vmlinuz' } },
  { type: 'asset-download', detail: { file: 'initramfs.img' } },
  { type: 'ignition-fetch' },
  { type: 'installed' },
  { type: 'state-changed', detail: { to: 'installed' } },
];
