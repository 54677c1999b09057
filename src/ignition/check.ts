import type { Mac } from '../inventory/mac.js';
import type { Problem } from '../inventory/problems.js';
import type { Config, MachineConfig } from '../inventory/schema.js';
import { renderIgnition } from './render.js';
import { type ParsedTemplate, readTemplate } from './template.js';
import { machineVars } from './vars.js';

/** Stands in for a real token when a template is rendered only to be checked. */
const CHECK_TOKEN = 'template-check';
const SAMPLE_MAC = '52:54:00:00:00:00' as Mac;

/**
 * For load.ts (`LoadOptions.checkTemplate`): renders `templateFile` the way the server will and
 * returns every problem at FILE:LINE:COL. Rendered once per distinct set of `vars` the template uses
 * among the machines of the profiles pointing at it, so 10,000 machines cost a handful of renders;
 * a machine lacking a `{{vars.NAME}}` the template uses is reported once per name.
 */
export async function checkTemplate(templateFile: string, config: Config): Promise<Problem[]> {
  const template = readTemplate(templateFile);
  if (template.problems.length > 0) return template.problems;
  const profiles = Object.entries(config.profiles)
    .filter(([, profile]) => profile.ignition === templateFile)
    .map(([name]) => name);
  const machines = config.machines.filter((machine) => profiles.includes(machine.profile));
  const usedVars = varsUsedBy(template);
  const samples: Sample[] = machines.map((machine) => ({ ...machine, unlisted: false }));
  if (samples.length === 0) {
    samples.push({
      mac: SAMPLE_MAC,
      profile: profiles[0] ?? 'sample',
      vars: sampleVars(usedVars),
      unlisted: false,
    });
  }
  // Machines booted through `unknown_machines` have no entry, so no vars and no hostname.
  if (profiles.includes(config.unknown_machines)) {
    samples.push({ mac: SAMPLE_MAC, profile: config.unknown_machines, vars: {}, unlisted: true });
  }
  const problems = new Map<string, Problem>();
  const renderedKeys = new Set<string>();
  for (const machine of samples) {
    const key = `${machine.unlisted}${JSON.stringify(usedVars.map((name) => machine.vars[name] ?? null))}`;
    if (renderedKeys.has(key)) continue;
    renderedKeys.add(key);
    const assignment = {
      mac: machine.mac,
      hostname: machine.unlisted ? undefined : (machine.hostname ?? 'sample-host'),
      profile: machine.profile,
      ip: machine.ip ?? '10.77.0.2',
      listed: !machine.unlisted,
      state: undefined,
    };
    const vars = {
      ...machineVars(config, assignment, CHECK_TOKEN),
      vars: machine.unlisted ? undefined : machine.vars,
    };
    const rendered = renderIgnition(template, vars);
    if (rendered.ok) continue;
    for (const problem of rendered.problems) {
      const identity = `${problem.line}:${problem.col}:${problem.message.replace(machine.mac, '')}`;
      if (!problems.has(identity)) problems.set(identity, problem);
    }
  }
  return [...problems.values()];
}

type Sample = MachineConfig & { unlisted: boolean };

const VARS_PLACEHOLDER = /\{\{\s*vars\.([A-Za-z0-9_-]+)\s*\}\}/g;

function varsUsedBy(template: ParsedTemplate): string[] {
  return [...new Set([...template.text.matchAll(VARS_PLACEHOLDER)].map((match) => match[1] ?? ''))].sort();
}

/** A profile nobody uses yet is still checked, with a placeholder for each var. */
function sampleVars(names: string[]): Record<string, string> {
  return Object.fromEntries(names.map((name) => [name, `sample-${name}`]));
}
