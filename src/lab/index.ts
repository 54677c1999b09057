/**
 * The lab's public surface: what the e2e tests, the baseline benchmark and `rackboot lab` use.
 */
export type { AcceleratorChoice } from './accelerator.js';
export { defaultLabCacheDirectory } from './assets.js';
export { LOCAL_DISK_MARKER } from './boot-sector.js';
export {
  type BootOptions,
  type BootOutcome,
  type BootResult,
  LAB_HTTP_PORT,
  type Lab,
  type LabOptions,
  type LabServer,
  startLab,
} from './lab.js';
export { ignitionProblem, type LabMachine } from './lab-config.js';
export { LAB_FIRMWARES, type LabFirmware, type SerialLine } from './qemu.js';
export { BOOT_PHASES, type BootPhase, type BootTimeline, bootTimeline, formatTimeline } from './timings.js';
