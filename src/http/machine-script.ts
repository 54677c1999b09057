import { basename } from 'node:path';
import {
  type Arch,
  isKernelWord,
  type Mac,
  type MachineAssignment,
  NOT_A_KERNEL_WORD,
} from '../boot-plan.js';
import { type PathError, substituteString, type TemplateVars } from '../ignition/template.js';
import { type ProfileAssets, profileAssets } from '../inventory/profile-assets.js';
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
/** The installer's own Ignition run needs these unless the profile sets them (installerIgnitionArgs). */
const FIXED_INSTALLER_ARGS = ['ignition.firstboot', 'ignition.platform.id=metal'] as const;

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
  args: readonly string[];
}

interface MachinePlan extends BootPlan {
  /** The words of the kernel line that only this machine has (its URLs, its filled-in args), in order. */
  ownWords: readonly string[];
  /** Every other word passed isKernelWord when the profile's shared plan was made. */
  sharedWordsPass: boolean;
}

/**
 * iPXE splits a `kernel` line at whitespace and ends it at a line break, so an argument or URL
 * holding either (a var with a newline, a spaced `install_device`) would add arguments or run its
 * own commands — `shell`, or `chain` to another server — and one starting with `#` would silently
 * drop every word after it (isKernelWord). Such a plan is refused whole; `${…}` stays
 * allowed, as iPXE settings in arguments are a feature (`${mac}`). The profile's shared words were
 * checked when its plan was made: while they all pass, the first broken word can only be one of
 * the machine's own.
 */
function checkedPlan(plan: MachinePlan | { error: string }): BootPlan | { error: string } {
  if ('error' in plan) return plan;
  const words = plan.sharedWordsPass
    ? plan.ownWords
    : [plan.kernelUrl, ...plan.initrds.map((initrd) => initrd.url), ...plan.args];
  const broken = words.find((word) => !isKernelWord(word));
  if (broken === undefined) return plan;
  return {
    error: `${JSON.stringify(broken)} ${NOT_A_KERNEL_WORD}; a kernel argument, URL or var used in one must be a single word`,
  };
}

/**
 * What a profile boots on one arch whatever the machine: asset URLs, initrd names, the fixed
 * arguments, and the profile's `args` when none holds a `{{…}}`. Building these for every request
 * was most of a boot script's cost and of its garbage (docs/http.md). Kept per profile object (a
 * reload replaces them all) and arch, and made again when the files the profile resolves to or the
 * base URL differ: `fetch` rewrites the stream manifest without a reload.
 */
interface SharedPlan {
  assets: ProfileAssets;
  baseUrl: string;
  kernelUrl: string;
  initrds: InitrdImage[];
  /** `coreos.live.rootfs_url=…`; undefined without a rootfs. */
  rootfsArg: string | undefined;
  /** `coreos.inst.install_dev=…`; undefined without an install_device. */
  installDevArg: string | undefined;
  /** The profile's `args` when none holds a placeholder; undefined when each machine fills them. */
  fixedArgs: readonly string[] | undefined;
  /** Every word above passes isKernelWord, so that a machine's plan checks only its own. */
  wordsPass: boolean;
}

const sharedPlans = new WeakMap<ProfileConfig, Map<Arch, SharedPlan>>();

function sharedPlan(profile: ProfileConfig, arch: Arch, assets: ProfileAssets, baseUrl: string): SharedPlan {
  let byArch = sharedPlans.get(profile);
  if (!byArch) {
    byArch = new Map();
    sharedPlans.set(profile, byArch);
  }
  const kept = byArch.get(arch);
  if (kept && kept.baseUrl === baseUrl && sameAssets(kept.assets, assets)) return kept;
  const args = profile.args ?? [];
  const kernelUrl = assetUrl(assets.kernel, baseUrl);
  const initrds = namedInitrds(
    assets.initrd,
    profile.kind === 'coreos-install' ? 'main' : undefined,
    baseUrl,
  );
  const rootfsArg =
    assets.rootfs === undefined ? undefined : `coreos.live.rootfs_url=${assetUrl(assets.rootfs, baseUrl)}`;
  const installDevArg = profile.install_device
    ? `coreos.inst.install_dev=${profile.install_device}`
    : undefined;
  const fixedArgs = args.some((arg) => arg.includes('{{')) ? undefined : args;
  const words = [
    kernelUrl,
    ...initrds.map((initrd) => initrd.url),
    ...[rootfsArg, installDevArg].filter((arg) => arg !== undefined),
    ...FIXED_INSTALLER_ARGS,
    ...DEFAULT_CONSOLE_ARGS,
    ...(fixedArgs ?? []),
  ];
  const plan: SharedPlan = {
    assets,
    baseUrl,
    kernelUrl,
    initrds,
    rootfsArg,
    installDevArg,
    fixedArgs,
    wordsPass: words.every(isKernelWord),
  };
  byArch.set(arch, plan);
  return plan;
}

function sameAssets(a: ProfileAssets, b: ProfileAssets): boolean {
  return (
    a.kernel === b.kernel &&
    a.rootfs === b.rootfs &&
    a.initrd.length === b.initrd.length &&
    a.initrd.every((initrd, index) => initrd === b.initrd[index])
  );
}

function bootPlan(
  config: Config,
  profile: ProfileConfig,
  arch: Arch,
  vars: TemplateVars,
): MachinePlan | { error: string } {
  const assets = profileAssets(profile, arch, config.server.assets);
  if ('error' in assets) return assets;
  const shared = sharedPlan(profile, arch, assets, vars.base_url);
  const profileArgs = shared.fixedArgs ?? filledArgs(profile.args ?? [], vars);
  if ('error' in profileArgs) return profileArgs;
  const { kernelUrl, initrds, wordsPass: sharedWordsPass } = shared;
  const machineArgs = shared.fixedArgs ? [] : profileArgs;
  if (profile.kind === 'linux')
    return { kernelUrl, initrds, args: profileArgs, ownWords: machineArgs, sharedWordsPass };

  if (shared.rootfsArg === undefined) return { error: `no rootfs for ${arch}: set rootfs or coreos.stream` };
  if (shared.installDevArg === undefined) return { error: 'no install_device (e.g. /dev/sda)' };
  // `name` or `name=…`, compared in place: four calls per script
  const hasArg = (name: string) =>
    profileArgs.some(
      (arg) => arg.startsWith(name) && (arg.length === name.length || arg[name.length] === '='),
    );
  const ignitionArg = `coreos.inst.ignition_url=${vars.ignition_url}`;
  const installerArgs = installerIgnitionArgs(hasArg, vars.installer_ignition_url);
  const args = [
    shared.rootfsArg,
    shared.installDevArg,
    ignitionArg,
    ...installerArgs,
    ...(hasArg('console') ? [] : DEFAULT_CONSOLE_ARGS),
    ...profileArgs,
  ];
  const ownWords = [ignitionArg, ...installerArgs, ...machineArgs];
  return { kernelUrl, initrds, args, ownWords, sharedWordsPass };
}

/** A profile's `args` with this machine's vars filled in, or every placeholder that cannot be. */
function filledArgs(args: readonly string[], vars: TemplateVars): readonly string[] | { error: string } {
  const errors: PathError[] = [];
  const filled = args.map((arg, index) => substituteString(arg, vars, ['args', index], errors));
  return errors.length > 0 ? { error: errors.map((error) => error.message).join('; ') } : filled;
}

/**
 * The live environment's own Ignition config, which reports `disk-written` after coreos-installer
 * (render.ts installerIgnition), with the arguments Ignition needs to run on a live PXE boot. A profile
 * that sets `ignition.config.url` itself brings its own live config, and its own report.
 */
function installerIgnitionArgs(hasArg: (name: string) => boolean, url: string): string[] {
  if (hasArg('ignition.config.url')) return [];
  const [firstboot, platform] = FIXED_INSTALLER_ARGS;
  return [
    ...(hasArg('ignition.firstboot') ? [] : [firstboot]),
    ...(hasArg('ignition.platform.id') ? [] : [platform]),
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
