import { statSync } from 'node:fs';
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

interface CachedTemplate {
  /** ino, size and mtime: a changed file is parsed again at the next request. */
  identity: string;
  template: ParsedTemplate;
}

/**
 * Renders machines' Ignition, each template file parsed once and parsed again when the file
 * changes: an edited template applies to the next machine without a config reload, and a broken
 * edit answers 503 (logged with FILE:LINE:COL) until it is fixed, instead of booting a half config.
 */
export function createMachineIgnition(): MachineIgnition {
  const templates = new Map<string, CachedTemplate>();
  const templateFor = (file: string): ParsedTemplate => {
    const identity = fileIdentity(file);
    const cached = templates.get(file);
    if (cached && cached.identity === identity) return cached.template;
    const template = readTemplate(file);
    templates.set(file, { identity, template });
    return template;
  };
  return (config, assignment, vars) => {
    const file = config.profiles[assignment.profile]?.ignition;
    return renderIgnition(file === undefined ? BUILT_IN_TEMPLATE : templateFor(file), vars);
  };
}

function fileIdentity(file: string): string {
  try {
    const stats = statSync(file);
    return `${stats.ino}:${stats.size}:${stats.mtimeMs}`;
  } catch {
    return 'missing';
  }
}
