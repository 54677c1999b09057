import type { MachineAssignment } from '../boot-plan.js';
import { isKernelWord, NOT_A_KERNEL_WORD } from '../boot-plan.js';
import { counted } from '../counted.js';
import { createBootDecision } from '../inventory/decision.js';
import type { TemplateCheck } from '../inventory/load.js';
import type { Mac } from '../inventory/mac.js';
import type { Problem } from '../inventory/problems.js';
import type { Config } from '../inventory/schema.js';
import { renderIgnition } from './render.js';
import {
  type ParsedTemplate,
  type PathError,
  readTemplate,
  substituteString,
  type TemplateVars,
  typedVarsOf,
  variablesIn,
  variablesUsedBy,
} from './template.js';
import { createMachineSecrets, type MachineSecrets } from './tokens.js';
import { machineVars } from './vars.js';

const SAMPLE_MAC = '52:54:00:00:00:00' as Mac;

interface Sample {
  /** Who the render stands for, in messages: a MAC, or the machines booted through unknown_machines. */
  who: string;
  vars: TemplateVars;
}

/**
 * For load.ts (`LoadOptions.checkTemplate`): renders `templateFile` the way the server will and
 * returns every problem at FILE:LINE:COL. Each machine of the profiles pointing at it is rendered
 * with exactly the variables the server will give it (machineVars over the same BootDecision: no
 * hostname is '', no reservation is ''), but machines that agree on every variable the template
 * names share one render, so 10,000 machines of a template without per-machine variables cost one.
 * A problem that only some machines have names them. The text read goes back with the problems.
 */
export async function checkTemplate(templateFile: string, config: Config): Promise<TemplateCheck> {
  const template = readTemplate(templateFile);
  if (template.problems.length > 0) return { problems: template.problems, text: template.text };
  const profiles = new Set(
    Object.entries(config.profiles)
      .filter(([, profile]) => profile.ignition === templateFile)
      .map(([name]) => name),
  );
  const used = variablesUsedBy(template);
  const typed = typedVarsOf(template);
  // Machine by machine, keeping only each render's problems: with a render per machine (a
  // template naming {{hostname}}), holding every machine's variables first added ~5 MB to the
  // load's peak RSS for 10,000 machines.
  const problemsOfRender = new Map<string, string[]>();
  const problems = new Map<string, { problem: Problem; who: string[] }>();
  let machines = 0;
  for (const sample of samplesFor(config, profiles, used, typed)) {
    machines += 1;
    const key = JSON.stringify(used.map((name) => variableValue(sample.vars, name)));
    let identities = problemsOfRender.get(key);
    if (identities === undefined) {
      identities = renderProblems(template, sample, problems);
      problemsOfRender.set(key, identities);
    }
    for (const identity of identities) problems.get(identity)?.who.push(sample.who);
  }
  return {
    problems: [...problems.values()].map(({ problem, who }) => ({
      ...problem,
      message: namingMachines(problem.message, who, machines),
    })),
    text: template.text,
  };
}

/**
 * For load.ts (`LoadOptions.checkArguments`): each profile's `args` filled for every machine of the
 * profile as the server fills them for its iPXE script (machine-script.ts), so a misspelt variable,
 * a var a machine lacks or a value that would split the kernel line (or an argument written so) is
 * refused at its line, not answered at each of those machines' boots with an error script and a
 * reboot. Machines that agree on every variable the args name share one fill, as templates share
 * a render.
 */
export function checkArguments(config: Config): { path: (string | number)[]; message: string }[] {
  const found: { path: (string | number)[]; message: string }[] = [];
  for (const [name, profile] of Object.entries(config.profiles)) {
    const args = profile.args ?? [];
    const used = [...new Set(args.flatMap(variablesIn))];
    // Written so in the file: every machine of the profile would get a script that says so instead of booting.
    for (const [index, arg] of args.entries()) {
      if (!arg.includes('{{') && !isKernelWord(arg))
        found.push({
          path: ['profiles', name, 'args', index],
          message: `this argument ${NOT_A_KERNEL_WORD}: no machine of the profile could boot`,
        });
    }
    if (used.length === 0) continue;
    const problems = new Map<string, { path: (string | number)[]; message: string; who: string[] }>();
    const problemsOfFill = new Map<string, string[]>();
    let machines = 0;
    for (const sample of samplesFor(config, new Set([name]), used)) {
      machines += 1;
      const key = JSON.stringify(used.map((variable) => variableValue(sample.vars, variable)));
      let identities = problemsOfFill.get(key);
      if (identities === undefined) {
        identities = [];
        for (const [index, arg] of args.entries()) {
          const path = ['profiles', name, 'args', index];
          const errors: PathError[] = [];
          const filled = substituteString(arg, sample.vars, path, errors);
          const messages = errors.map((error) => error.message.replace(sample.vars.mac, '{mac}'));
          if (errors.length === 0 && arg.includes('{{') && !isKernelWord(filled))
            messages.push(
              `filled in, this argument ${NOT_A_KERNEL_WORD}: a var used in one must be a single word`,
            );
          for (const message of messages) {
            const identity = `${index}:${message}`;
            if (!problems.has(identity)) problems.set(identity, { path, message, who: [] });
            identities.push(identity);
          }
        }
        problemsOfFill.set(key, identities);
      }
      for (const identity of identities) problems.get(identity)?.who.push(sample.who);
    }
    for (const { path, message, who } of problems.values()) {
      const [first = ''] = who;
      found.push({ path, message: namingMachines(message.replace('{mac}', first), who, machines) });
    }
  }
  return found;
}

const NO_PROBLEMS: string[] = [];

/**
 * Renders for `sample`, adds its new problems to `problems`, and returns the identities of all it had,
 * each once: a render that reports one problem twice (two trees with the same mistake) is still one
 * machine that has it.
 */
function renderProblems(
  template: ParsedTemplate,
  sample: Sample,
  problems: Map<string, { problem: Problem; who: string[] }>,
): string[] {
  const rendered = renderIgnition(template, sample.vars);
  if (rendered.ok) return NO_PROBLEMS;
  const identities = new Set<string>();
  for (const problem of rendered.problems) {
    // The same mistake for another machine differs only by its MAC in the message.
    const identity = `${problem.line}:${problem.col}:${problem.message.replace(sample.vars.mac, '')}`;
    if (!problems.has(identity)) problems.set(identity, { problem, who: [] });
    identities.add(identity);
  }
  return [...identities];
}

function* samplesFor(
  config: Config,
  profiles: Set<string>,
  used: string[],
  typed: Map<string, 'integer' | 'boolean'> = new Map(),
): Generator<Sample> {
  // A token of the real shape (length, expiry prefix) from a throwaway secret, one for all: the
  // server's secret stays in server.state, and only the shape of a token can matter to a template.
  const throwaway = createMachineSecrets(Buffer.alloc(32), () => config.ignition.token_ttl);
  const token = throwaway.tokenFor(SAMPLE_MAC, 'ignition', Date.now());
  const sampleSecrets: MachineSecrets = { ...throwaway, tokenFor: () => token, verify: () => false };
  const decision = createBootDecision(
    () => config,
    () => undefined,
  );
  const varsOf = (assignment: MachineAssignment) =>
    machineVars(config, assignment, sampleSecrets, Date.now());
  let listed = 0;
  for (const machine of config.machines) {
    const assignment = profiles.has(machine.profile) ? decision.assignmentFor(machine.mac) : undefined;
    if (assignment) {
      listed += 1;
      yield { who: machine.mac, vars: varsOf(assignment) };
    }
  }
  if (listed === 0) {
    // A profile nobody uses yet is still checked, as a plausible machine with a placeholder per var.
    const [profile = 'sample'] = profiles;
    const assignment = {
      mac: SAMPLE_MAC,
      hostname: 'sample-host',
      profile,
      ip: '10.77.0.2',
      listed: true,
      state: undefined,
      bootsFromDisk: false,
    };
    yield { who: SAMPLE_MAC, vars: { ...varsOf(assignment), vars: sampleVars(used, typed) } };
  }
  if (profiles.has(config.unknown_machines)) {
    // What the BootDecision hands out for a MAC that is not listed: no hostname, no address, no vars.
    const assignment = {
      mac: SAMPLE_MAC,
      hostname: undefined,
      profile: config.unknown_machines,
      ip: undefined,
      listed: false,
      state: undefined,
      bootsFromDisk: false,
    };
    yield { who: 'machines not in the inventory', vars: { ...varsOf(assignment), vars: undefined } };
  }
}

/**
 * What machines without an inventory entry have for every `vars.NAME`: no vars at all, which renders
 * differently from one missing var (null). Not undefined: JSON.stringify writes that as null in the
 * render key, and their problem was taken for a listed machine's and never reported.
 */
const NO_VARS = { noVars: true };

function variableValue(vars: TemplateVars, name: string): unknown {
  if (!name.startsWith('vars.')) return vars[name as keyof TemplateVars] ?? null;
  return vars.vars === undefined ? NO_VARS : (vars.vars[name.slice(5)] ?? null);
}

/**
 * Stand-ins for the vars of a profile no machine uses yet, of the type each field takes: `sample-uid`
 * in `uid: "{{vars.uid}}"` failed as not an integer, refusing a template every machine could fill. 1
 * and false pass the fields Ignition checks further (a partition number, a mode; `overwrite`,
 * `shouldExist` beside other keys), where 0 or true would not.
 */
const SAMPLE_VALUE_OF_TYPE = { integer: '1', boolean: 'false' };

function sampleVars(used: string[], typed: Map<string, 'integer' | 'boolean'>): Record<string, string> {
  const names = used.filter((name) => name.startsWith('vars.')).map((name) => name.slice(5));
  return Object.fromEntries(
    names.map((name) => {
      const type = typed.get(name);
      return [name, type ? SAMPLE_VALUE_OF_TYPE[type] : `sample-${name}`];
    }),
  );
}

/** Says which machines a problem is about when not all of the template's machines have it. */
function namingMachines(message: string, who: string[], total: number): string {
  if (who.length === total) return message;
  const [first = '', ...others] = who;
  const more = others.length === 0 ? '' : counted(others.length, 'other machine');
  if (message.includes(first)) return more === '' ? message : `${message} (and ${more})`;
  return `${message} (for ${first}${more === '' ? '' : ` and ${more}`})`;
}
