import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { BootDecision, Mac } from '../../src/boot-plan.js';
import { type AppDeps, buildApp } from '../../src/http/app.js';
import { checkTemplate } from '../../src/ignition/check.js';
import { openMachineSecrets } from '../../src/ignition/tokens.js';
import { createBootDecision } from '../../src/inventory/decision.js';
import { loadConfigText } from '../../src/inventory/load.js';
import type { Config } from '../../src/inventory/schema.js';
import type { MachineEventInput, MachineState } from '../../src/lifecycle/events.js';
import { type Lifecycle, openLifecycle } from '../../src/lifecycle/store.js';
import { createRootLogger } from '../../src/log.js';

/**
 * A real config loaded by the real loader from files in a temp dir, the real BootDecision over an
 * in-memory state map (matchbox testfakes style), and a record() that keeps events in an array.
 */
export interface BootFixture {
  dir: string;
  config: Config;
  states: Map<Mac, MachineState>;
  events: MachineEventInput[];
  logs: Record<string, unknown>[];
  deps: AppDeps;
  decision: BootDecision;
  lifecycle: Lifecycle;
  cleanup(): Promise<void>;
}

/** The Fedora CoreOS install profile over ASSET_FILES' fcos/ layout, indented to sit under `profiles.<name>:`. */
export const COREOS_PROFILE_YAML = `    kind: coreos-install
    kernel: fcos/kernel
    initrd: [fcos/initramfs.img]
    rootfs: fcos/rootfs.img
    install_device: /dev/sda
    ignition: ignition/worker.bu
    args: [console=tty0, "console=ttyS0,115200n8"]`;

export const BASE_YAML = `
server:
  address: 10.77.0.1
  http: { port: 8080 }
  assets: assets
  state: state
profiles:
  coreos:
${COREOS_PROFILE_YAML}
  multiarch:
    kind: coreos-install
    install_device: /dev/vda
    arch:
      x86_64: { kernel: fcos/kernel, initrd: [fcos/initramfs.img], rootfs: fcos/rootfs.img }
      aarch64: { kernel: fcos-arm/kernel, initrd: [fcos-arm/initramfs.img], rootfs: fcos-arm/rootfs.img }
  plain:
    kind: linux
    kernel: linux/vmlinuz
    initrd: [linux/initramfs.img, linux/extra.cpio]
    args: ["console=ttyS0", "my.ignition={{ignition_url}}", "my.report={{events_url}}", "role={{vars.role}}"]
    ignition: ignition/plain.ign
machines:
  - { mac: "52:54:00:12:34:56", hostname: node1, profile: coreos, ip: 10.77.0.21, vars: { role: worker } }
  - { mac: "52:54:00:12:34:57", hostname: node2, profile: plain, ip: 10.77.0.22, vars: { role: storage } }
  - { mac: "52:54:00:12:34:58", hostname: node3, profile: multiarch }
`;

export const WORKER_BUTANE = `variant: fcos
version: 1.5.0
passwd:
  users:
    - name: core
      ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin"]
      password_hash: "$y$j9T$secret-hash"
storage:
  files:
    - path: /etc/hostname
      mode: 0644
      contents: { inline: "{{hostname}}" }
    - path: /etc/rackboot/role
      contents: { inline: "{{vars.role}}" }
`;

export const PLAIN_IGNITION = `{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/role","contents":{"source":"data:,{{vars.role}}"}}]}}`;

export const ASSET_FILES = [
  'fcos/kernel',
  'fcos/initramfs.img',
  'fcos/rootfs.img',
  'fcos-arm/kernel',
  'fcos-arm/initramfs.img',
  'fcos-arm/rootfs.img',
  'linux/vmlinuz',
  'linux/initramfs.img',
  'linux/extra.cpio',
];

export interface FixtureOptions {
  yaml?: string;
  files?: Record<string, string>;
  macForIp?: (ip: string) => Mac | undefined;
  tokenTtlSeconds?: number;
  /** Load as `validate` does (missing assets are warnings), to test how a broken profile is served. */
  allowMissingAssets?: boolean;
}

export async function bootFixture(options: FixtureOptions = {}): Promise<BootFixture> {
  const dir = mkdtempSync(join(tmpdir(), 'rackboot-http-'));
  const files: Record<string, string> = {
    'rackboot.yaml': options.yaml ?? BASE_YAML,
    'ignition/worker.bu': WORKER_BUTANE,
    'ignition/plain.ign': PLAIN_IGNITION,
    ...Object.fromEntries(ASSET_FILES.map((file) => [`assets/${file}`, `contents of ${file}\n`])),
    ...options.files,
  };
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, file)), { recursive: true });
    writeFileSync(join(dir, file), text);
  }
  const loaded = await loadConfigText(files['rackboot.yaml'] ?? '', join(dir, 'rackboot.yaml'), {
    checkTemplate,
    missingAssets: options.allowMissingAssets ? 'warn' : 'error',
  });
  if (!loaded.ok) throw new Error(`fixture config invalid: ${JSON.stringify(loaded.problems)}`);
  const config = loaded.config;
  const states = new Map<Mac, MachineState>();
  const events: MachineEventInput[] = [];
  const logs: Record<string, unknown>[] = [];
  const decision = createBootDecision(
    () => config,
    (mac) => states.get(mac),
  );
  const logger = createRootLogger({
    level: 'debug',
    destination: { write: (line: string) => logs.push(JSON.parse(line)) } as unknown as NodeJS.WritableStream,
  });
  const lifecycle = openLifecycle({ stateDir: config.server.state, retention: 1000, logger });
  const deps: AppDeps = {
    config: () => config,
    decision,
    record: async (event) => {
      events.push(event);
    },
    logger,
    secrets: await openMachineSecrets(config.server.state, () => options.tokenTtlSeconds ?? 0),
    lifecycle,
    ...(options.macForIp ? { macForIp: options.macForIp } : {}),
  };
  return {
    dir,
    config,
    states,
    events,
    logs,
    deps,
    decision,
    lifecycle,
    cleanup: async () => {
      await lifecycle.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function fixtureApp(fixture: BootFixture) {
  return buildApp(fixture.deps);
}
