import { execFileSync } from 'node:child_process';
import { createLabNetwork } from '../../src/lab/network.js';
import { startVm } from '../../src/lab/qemu.js';

/**
 * Fixture for cleanup.test.ts: a harness process that builds a lab network, powers on a VM and
 * starts a server-like process, reports what it made, then waits to be killed.
 * Usage: node --import tsx test/e2e/abandoned-lab.ts SUBNET
 */
const subnet = Number(process.argv[2]);
const network = await createLabNetwork(subnet);
const tap = await network.addTap();
startVm(
  network,
  { name: 'abandoned', mac: '52:54:00:77:67:01', tap, firmware: 'bios', accelerator: 'tcg' },
  { hardLimitSeconds: 120 },
);
network.spawn('sleep', ['600'], { hardLimitSeconds: 120 });
network.lanHost.spawn('sleep', ['600'], { hardLimitSeconds: 120 });
// Report once QEMU itself (not only its `timeout` wrapper) runs in the namespace.
const pidsIn = (namespace: string) =>
  execFileSync('ip', ['netns', 'pids', namespace]).toString().split('\n').filter(Boolean).map(Number);
const deadline = Date.now() + 10_000;
const commandOf = (pid: number) => {
  try {
    return execFileSync('cat', [`/proc/${pid}/comm`])
      .toString()
      .trim();
  } catch {
    return '';
  }
};
while (Date.now() < deadline && !pidsIn(network.namespace).some((pid) => commandOf(pid).startsWith('qemu'))) {
  await new Promise((resolve) => setTimeout(resolve, 100));
}
const namespaces = [network.namespace, network.lanHost.namespace];
console.log(JSON.stringify({ namespaces, pids: namespaces.flatMap(pidsIn) }));
setInterval(() => undefined, 60_000);
