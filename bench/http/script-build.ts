/**
 * The CPU of building one boot script, alone (not part of the tests): what `/boot/<mac>.ipxe` does
 * for a machine before any HTTP or event work (assignment, template variables, machineScript), over
 * the HTTP bench's config, each machine in turn, as a boot storm asks:
 *   node --import tsx bench/http/script-build.ts [--machines 10000] [--rounds 7]
 * Prints µs per script for each round, and their median. In-process and single-threaded, it moves
 * far less with the host's load than bench:http's req/s, so it can tell a change of a few µs.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { machineScript } from '../../src/http/machine-script.js';
import { createMachineSecrets } from '../../src/ignition/tokens.js';
import { machineVars } from '../../src/ignition/vars.js';
import { createBootDecision } from '../../src/inventory/decision.js';
import { loadConfigFile } from '../../src/inventory/load.js';
import { median, numberOption } from '../plumbing.js';
import { writeHttpBenchFixture } from './bench-server.js';

const MACHINES = numberOption('machines', 10_000);
const ROUNDS = numberOption('rounds', 7);
const SCRIPTS_PER_ROUND = 200_000;

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'rackboot-bench-script-build-'));
  try {
    const macs = await writeHttpBenchFixture(dir, { machines: MACHINES, httpPort: 8080, tftpPort: 6969 });
    const loaded = await loadConfigFile(join(dir, 'rackboot.yaml'));
    if (!loaded.ok) throw new Error(loaded.problems.map((problem) => problem.message).join('\n'));
    const { config } = loaded;
    const secrets = createMachineSecrets(Buffer.alloc(32, 1));
    const decision = createBootDecision(
      () => config,
      () => 'booting',
    );
    const perScript: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const started = performance.now();
      for (let index = 0; index < SCRIPTS_PER_ROUND; index++) {
        const mac = macs[index % macs.length] as (typeof macs)[number];
        const assignment = decision.assignmentFor(mac);
        const vars = assignment && machineVars(config, assignment, secrets, Date.now());
        if (machineScript(config, mac, assignment, 'x86_64', vars).kind !== 'install')
          throw new Error(`${mac} got no install script`);
      }
      perScript.push(((performance.now() - started) * 1000) / SCRIPTS_PER_ROUND);
    }
    const rounded = perScript.map((us) => Math.round(us * 100) / 100);
    console.log(JSON.stringify({ machines: MACHINES, usPerScript: rounded, median: median(rounded) }));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
