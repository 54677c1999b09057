import type { MachineAssignment } from '../boot-plan.js';
import type { Config } from '../inventory/schema.js';
import { type RenderedIgnition, renderIgnition } from './render.js';
import { type ParsedTemplate, parseTemplate, readTemplate, type TemplateVars } from './template.js';

/** What a machine whose profile names no template gets: nothing but the first-boot report unit. */
const BUILT_IN_TEMPLATE = parseTemplate('(built-in empty config)', '{"ignition":{"version":"3.4.0"}}');

export type MachineIgnition = (
  config: Config,
  assignment: MachineAssignment,
  vars: TemplateVars,
) => RenderedIgnition;

/**
 * Renders machines' Ignition with each template file parsed once per config snapshot (snapshots are
 * frozen and replaced whole on reload, so a reload re-reads edited templates).
 */
export function createMachineIgnition(): MachineIgnition {
  const templatesBySnapshot = new WeakMap<Config, Map<string, ParsedTemplate>>();
  const templateFor = (config: Config, file: string): ParsedTemplate => {
    let templates = templatesBySnapshot.get(config);
    if (!templates) {
      templates = new Map();
      templatesBySnapshot.set(config, templates);
    }
    let template = templates.get(file);
    if (!template) {
      template = readTemplate(file);
      templates.set(file, template);
    }
    return template;
  };
  return (config, assignment, vars) => {
    const file = config.profiles[assignment.profile]?.ignition;
    return renderIgnition(file === undefined ? BUILT_IN_TEMPLATE : templateFor(config, file), vars);
  };
}
