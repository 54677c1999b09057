import { basename } from 'node:path';
import { type Arch, isKernelWord, type Mac, type MachineAssignment } from '../boot-plan.js';
import { type PathError, substituteString, type TemplateVars } from '../ignition/template.js';
import { profileAssets } from '../inventory/profile-assets.js';
import type { Config, ProfileConfig } from '../inventory/schema.js';
import {
  bootScript,
  type InitrdImage,
  localDiskScript,
  unavailableScript,
  unknownMachineScript,
} from './ipxe.js';

export type ScriptKind = 'install' | 'local-disk' | 'unknown' | 'unavailable';

interface MachineScript {
  kind: ScriptKind;
  script: string;
  /** Why this script, in sentences an operator can act on (explain, logs). */
  reasons: string[];
}

/** Console args added to coreos-install profiles that name no `console=` themselves. */
const DEFAULT_CONSOLE_ARGS = ['console=tty0', 'console=ttyS0,115200n8'];

/**
 * The iPXE script one machine gets, and why: the single decision behind `/boot/<mac>.ipxe`,
 * `rackboot render ipxe` and `/api/v1/explain`, so the three can never disagree.
 */
export function machineScript(
  config: Config,
  mac: Mac,
  assignment: MachineAssignment | undefined,
  arch: Arch,
  vars: TemplateVars | undefined,
): MachineScript {
  if (!assignment || !vars) {
    return {
      kind: 'unknown',
      script: unknownMachineScript(mac),
      reasons: [`${mac} is not under machines: and unknown_machines is ignore`],
    };
  }
  const who = assignment.hostname ? `${assignment.hostname} (${mac})` : mac;
  const reasons = [
    assignment.listed
      ? `${mac} is listed under machines: with profile ${assignment.profile}`
      : `${mac} is not listed; unknown_machines: ${assignment.profile} applies`,
  ];
  if (assignment.bootsFromDisk) {
    const why = assignment.state === 'installed' ? 'it completed an install' : 'its disk holds an install';
    reasons.push(
      `its state is ${assignment.state}; ${why}, so it boots from its local disk until \`rackboot reprovision\``,
    );
    return { kind: 'local-disk', script: localDiskScript(who, mac), reasons };
  }
  reasons.push(`its state is ${assignment.state ?? 'new (no events yet)'}, so it gets the installer`);
  const profile = config.profiles[assignment.profile];
  const plan = profile
    ? checkedPlan(bootPlan(config, profile, arch, vars))
    : { error: `profile ${assignment.profile} does not exist` };
  if ('error' in plan) {
    reasons.push(`cannot build its script: ${plan.error}`);
    return { kind: 'unavailable', script: unavailableScript(who, plan.error), reasons };
  }
  reasons.push(
    `profile ${assignment.profile} is kind ${profile?.kind}; arch ${arch} boots ${plan.kernelUrl}`,
  );
  const banner = `${who}: profile ${assignment.profile} (${profile?.kind}, ${arch})`;
  return { kind: 'install', script: bootScript({ banner, ...plan }), reasons };
}

interface BootPlan {
  kernelUrl: string;
  initrds: InitrdImage[];
  args: string[];
}

/**
 * iPXE splits a `kernel` line at whitespace and ends it at a line break, so an argument or URL
 * holding either (a var with a newline, a spaced `install_device`) would add arguments or run its
 * own commands — `shell`, or `chain` to another server. Such a plan is refused whole; `${…}` stays
 * allowed, as iPXE settings in arguments are a feature (`${mac}`).
 */
function checkedPlan(plan: BootPlan | { error: string }): BootPlan | { error: string } {
  if ('error' in plan) return plan;
  const words = [plan.kernelUrl, ...plan.initrds.map((initrd) => initrd.url), ...plan.args];
  const broken = words.find((word) => !isKernelWord(word));
  if (broken === undefined) return plan;
  return {
    error: `${JSON.stringify(broken)} holds whitespace or a control character or is an iPXE command separator (; && ||), which would split the kernel line or start an iPXE command; a kernel argument, URL or var used in one must be a single word`,
  };
}

function bootPlan(
  config: Config,
  profile: ProfileConfig,
  arch: Arch,
  vars: TemplateVars,
): BootPlan | { error: string } {
  const assets = profileAssets(profile, arch, config.server.assets);
  if ('error' in assets) return assets;
  const errors: PathError[] = [];
  const profileArgs = (profile.args ?? []).map((arg, index) =>
    substituteString(arg, vars, ['args', index], errors),
  );
  if (errors.length > 0) return { error: errors.map((error) => error.message).join('; ') };
  const initrds = namedInitrds(
    assets.initrd,
    profile.kind === 'coreos-install' ? 'main' : undefined,
    vars.base_url,
  );
  if (profile.kind === 'linux')
    return { kernelUrl: assetUrl(assets.kernel, vars.base_url), initrds, args: profileArgs };

  if (assets.rootfs === undefined) return { error: `no rootfs for ${arch}: set rootfs or coreos.stream` };
  if (!profile.install_device) return { error: 'no install_device (e.g. /dev/sda)' };
  const hasArg = (name: string) => profileArgs.some((arg) => arg === name || arg.startsWith(`${name}=`));
  const args = [
    `coreos.live.rootfs_url=${assetUrl(assets.rootfs, vars.base_url)}`,
    `coreos.inst.install_dev=${profile.install_device}`,
    `coreos.inst.ignition_url=${vars.ignition_url}`,
    ...installerIgnitionArgs(hasArg, vars.installer_ignition_url),
    ...(hasArg('console') ? [] : DEFAULT_CONSOLE_ARGS),
    ...profileArgs,
  ];
  return { kernelUrl: assetUrl(assets.kernel, vars.base_url), initrds, args };
}

/**
 * The live environment's own Ignition config, which reports `disk-written` after coreos-installer
 * (render.ts installerIgnition), with the arguments Ignition needs to run on a live PXE boot. A profile
 * that sets `ignition.config.url` itself brings its own live config, and its own report.
 */
function installerIgnitionArgs(hasArg: (name: string) => boolean, url: string): string[] {
  if (hasArg('ignition.config.url')) return [];
  return [
    ...(hasArg('ignition.firstboot') ? [] : ['ignition.firstboot']),
    ...(hasArg('ignition.platform.id') ? [] : ['ignition.platform.id=metal']),
    `ignition.config.url=${url}`,
  ];
}

/** The common case, a relative path that needs no escaping (checked first: every script names three). */
const PLAIN_ASSET_PATH = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

/** A path under server.assets becomes an /assets/ URL; an http(s) URL is used as it is. */
function assetUrl(asset: string, baseUrl: string): string {
  if (/^https?:\/\//.test(asset)) return asset;
  if (PLAIN_ASSET_PATH.test(asset)) return `${baseUrl}/assets/${asset}`;
  const path = asset
    .split('/')
    .filter((part) => part !== '')
    .map(encodeURIComponent)
    .join('/');
  return `${baseUrl}/assets/${path}`;
}

/**
 * iPXE image names for the initrds: Fedora CoreOS's documented `main` for the first of a
 * coreos-install profile, else the file name (what iPXE itself would call it), made unique.
 */
function namedInitrds(initrds: string[], firstName: string | undefined, baseUrl: string): InitrdImage[] {
  const used = new Set<string>();
  return initrds.map((initrd, index) => {
    const natural = basename(initrd.split('?')[0] ?? initrd).replace(/[^A-Za-z0-9._-]/g, '_') || 'initrd';
    let name = index === 0 && firstName ? firstName : natural;
    for (let suffix = 1; used.has(name); suffix++) name = `${natural}-${suffix}`;
    used.add(name);
    return { name, url: assetUrl(initrd, baseUrl) };
  });
}
