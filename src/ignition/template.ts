import { type Document, isMap, isPair, isScalar, isSeq, type LineCounter, parseDocument, visit } from 'yaml';
import { isName, nameRule } from '../inventory/names.js';
import { documentData, lineCounterFor, positionIn, yamlProblems } from '../inventory/parse.js';
import type { Problem } from '../inventory/problems.js';
import { readRegularFileSync } from '../regular-file.js';
import { textOf } from '../text-file.js';
import { SCALAR_TYPE_OF_KEY } from './spec.js';

/** A path into a template's data: mapping keys and sequence indices, as `yaml`'s `getIn` takes them. */
export type NodePath = (string | number)[];

/** An error found in a template's data, before it is pinned to a line and column. */
export interface PathError {
  path: NodePath;
  message: string;
  /** Point at the mapping key rather than its value (unknown or unsupported keys). */
  onKey?: boolean;
}

/** Template variables (CONTRACT.md); every value a string, as they end up inside YAML/JSON strings. */
export interface TemplateVars {
  mac: string;
  hostname: string;
  ip: string;
  profile: string;
  base_url: string;
  ignition_url: string;
  /** The live installer's own Ignition config (its disk-written hook); coreos-install scripts add it themselves. */
  installer_ignition_url: string;
  events_url: string;
  /** The machine's `vars`; undefined when it has no inventory entry (booted through unknown_machines). */
  vars: Record<string, string | number | boolean> | undefined;
}

const TOP_LEVEL_VARIABLES = new Set([
  'mac',
  'hostname',
  'ip',
  'profile',
  'base_url',
  'ignition_url',
  'installer_ignition_url',
  'events_url',
]);
/**
 * `{{ name }}`, or the escape `{{"{{"}}` (or `{{'{{'}}`, Go's and Jinja's spelling) for a literal `{{`:
 * `--format '{{"{{"}}.Names}}'` renders `--format '{{.Names}}'`. Every other `{{…}}` stays a placeholder
 * so a misspelt name is an error, never text; the escape was an error before, so no template that
 * rendered changes meaning.
 */
const PLACEHOLDER = /\{\{\s*("\{\{"|'\{\{'|[^{}]*?)\s*\}\}/g;
const LITERAL_BRACES = new Set(['"{{"', "'{{'"]);

/**
 * A template file parsed once: the YAML document (kept for line/column lookups) and its data.
 * JSON is YAML, so Ignition JSON templates take the same path as Butane.
 */
export interface ParsedTemplate {
  file: string;
  text: string;
  document: Document;
  lineCounter: LineCounter;
  data: unknown;
  /** YAML syntax errors and unknown `{{...}}` names; a template with problems is never rendered. */
  problems: Problem[];
}

export function readTemplate(file: string): ParsedTemplate {
  let bytes: Buffer | undefined;
  try {
    bytes = readRegularFileSync(file);
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    return parseTemplateWithProblem(file, `cannot read template (${reason})`);
  }
  if (bytes === undefined) return parseTemplateWithProblem(file, 'the template is not a regular file');
  const read = textOf(bytes);
  if (read.ok) return parseTemplate(file, read.text);
  return parseTemplateWithProblem(file, read.reason, read);
}

function parseTemplateWithProblem(
  file: string,
  message: string,
  { line, col } = { line: 1, col: 1 },
): ParsedTemplate {
  const parsed = parseTemplate(file, '');
  parsed.problems.push({ file, line, col, message });
  return parsed;
}

export function parseTemplate(file: string, text: string): ParsedTemplate {
  const lineCounter = lineCounterFor(text);
  // merge: go-yaml, and so Butane, resolves `<<: *anchor` (coreos/butane#507).
  const document = parseDocument(text, {
    lineCounter,
    keepSourceTokens: true,
    prettyErrors: false,
    merge: true,
  });
  const problems = yamlProblems(document, lineCounter, file, text, 'a template');
  const parsed: ParsedTemplate = { file, text, document, lineCounter, data: undefined, problems };
  if (problems.length > 0) return parsed;
  const position = positionIn(file, lineCounter);
  visit(document, {
    Pair(_key, pair) {
      if (isMap(pair.key) || isSeq(pair.key)) {
        problems.push({
          ...position(pair.key),
          message:
            'a key that is itself a map or a list: unquoted, a {{…}} placeholder reads as one in YAML; quote it ("{{hostname}}")',
        });
      }
    },
  });
  if (problems.length > 0) return parsed;
  if (isMap(document.contents) && document.contents.has('variant')) readAsGoYaml(document);
  // An alias naming no anchor, or past yaml's guard against alias bombs, is a problem at the alias,
  // as in the config: once it was thrown, a 500 from the server and a stack trace from validate.
  const data = documentData(document, position);
  if ('problems' in data) {
    problems.push(...data.problems);
    return parsed;
  }
  parsed.data = data.value;
  checkPlaceholderNames(parsed);
  return parsed;
}

/** The booleans go-yaml (yaml.v3) takes for a bool field: YAML 1.2's and YAML 1.1's. */
const GO_YAML_BOOLEANS = new Map<string, boolean>([
  ...['y', 'Y', 'yes', 'Yes', 'YES', 'on', 'On', 'ON', 'true', 'True', 'TRUE'].map(
    (word) => [word, true] as const,
  ),
  ...['n', 'N', 'no', 'No', 'NO', 'off', 'Off', 'OFF', 'false', 'False', 'FALSE'].map(
    (word) => [word, false] as const,
  ),
]);

/**
 * Butane is read by go-yaml into typed structs, and operators copy Butane examples, so an unquoted
 * scalar means what it means to Butane, by the type of the field it sits in: `mode: 0644` is octal
 * (YAML 1.1; YAML 1.2 says decimal 644) in an integer field only, as are `0b` binary and `_` between
 * digits (`size_mib: 10_240`, which YAML 1.2 reads as a string), `enabled: yes` is true in a boolean
 * field, and a string field takes any scalar's text as written (`inline: 0644` is "0644", `inline: 1.10`
 * is "1.10"). Quoted scalars are strings, as for go-yaml. Ignition JSON templates are left as parsed:
 * Ignition's JSON parser converts nothing.
 */
function readAsGoYaml(document: Document): void {
  visit(document, {
    Scalar(key, node, ancestors) {
      const source = node.srcToken && 'source' in node.srcToken ? node.srcToken.source : undefined;
      if (node.type !== 'PLAIN' || typeof source !== 'string' || node.value === null) return;
      const type = SCALAR_TYPE_OF_KEY.get(fieldKeyOf(key, ancestors));
      const integer = type === 'integer' ? goYamlInteger(source) : undefined;
      if (integer !== undefined) node.value = integer;
      else if (type === 'boolean' && GO_YAML_BOOLEANS.has(source)) node.value = GO_YAML_BOOLEANS.get(source);
      // Only a scalar YAML 1.2 reads as another type: a string's source may be folded over lines.
      else if (type === 'string' && typeof node.value !== 'string') node.value = source;
    },
  });
}

/** The key a scalar is the value of (`KEY`) or an item under (`KEY[]`), as SCALAR_TYPE_OF_KEY names it. */
function fieldKeyOf(key: unknown, ancestors: readonly unknown[]): string {
  const parent = ancestors[ancestors.length - 1];
  if (key === 'value' && isPair(parent) && isScalar(parent.key)) return String(parent.key.value);
  const grandparent = ancestors[ancestors.length - 2];
  if (typeof key === 'number' && isSeq(parent) && isPair(grandparent) && isScalar(grandparent.key))
    return `${String(grandparent.key.value)}[]`;
  return '';
}

function checkPlaceholderNames(parsed: ParsedTemplate): void {
  visit(parsed.document, {
    Scalar(key, node) {
      if (key === 'key' || typeof node.value !== 'string' || !node.range) return;
      for (const match of node.value.matchAll(PLACEHOLDER)) {
        const name = match[1] ?? '';
        if (isKnownVariableName(name) || LITERAL_BRACES.has(name)) continue;
        const inSource = parsed.text.indexOf(match[0], node.range[0]);
        const offset = inSource >= 0 && inSource < node.range[1] ? inSource : node.range[0];
        parsed.problems.push({
          ...positionAt(parsed, offset),
          message: name.startsWith('vars.')
            ? `unknown template variable {{${name}}}: ${nameRule('vars')}`
            : `unknown template variable {{${name}}}; known: ${[...TOP_LEVEL_VARIABLES].join(', ')}, vars.NAME`,
        });
      }
    },
  });
}

/** The names of the `{{...}}` placeholders in the template's text, each once, sorted. */
export function variablesUsedBy(parsed: ParsedTemplate): string[] {
  return [...new Set(variablesIn(parsed.text))].sort();
}

/** The names of the `{{…}}` variables in `text`, as written, each as often as it appears. */
export function variablesIn(text: string): string[] {
  return [...text.matchAll(PLACEHOLDER)]
    .map((match) => match[1] ?? '')
    .filter((name) => !LITERAL_BRACES.has(name));
}

function isKnownVariableName(name: string): boolean {
  return TOP_LEVEL_VARIABLES.has(name) || (name.startsWith('vars.') && isName(name.slice(5)));
}

function positionAt(parsed: ParsedTemplate, offset: number): Problem {
  const position = parsed.lineCounter.linePos(offset);
  return { file: parsed.file, line: position.line, col: position.col, message: '' };
}

/**
 * The template's data with every `{{...}}` in string values replaced. Substituting after parsing
 * means a value can never change the YAML structure (a hostname or var with `: ` or a newline stays
 * one string). A `{{vars.NAME}}` the machine does not define is an error at its path.
 */
export function substitute(data: unknown, vars: TemplateVars): { value: unknown; errors: PathError[] } {
  const errors: PathError[] = [];
  const walk = (value: unknown, path: NodePath): unknown => {
    if (typeof value === 'string') {
      const substituted = substituteString(value, vars, path, errors);
      const type = SCALAR_TYPE_OF_KEY.get(keyOfPath(path));
      const typed = type === 'integer' || type === 'boolean';
      if (!typed || substituted === value || !SINGLE_PLACEHOLDER.test(value)) return substituted;
      return typedValue(substituted, type, value.trim(), path, errors);
    }
    if (Array.isArray(value)) return value.map((item, index) => walk(item, [...path, index]));
    if (value !== null && typeof value === 'object') {
      return Object.fromEntries(
        Object.entries(value).map(([key, item]) => [key, walk(item, [...path, key])]),
      );
    }
    return value;
  };
  return { value: walk(data, []), errors };
}

/** A string that is one placeholder and nothing else: in an integer or boolean field it gives that type. */
const SINGLE_PLACEHOLDER = /^\s*\{\{\s*[^{}]*?\s*\}\}\s*$/;

/**
 * The `vars.NAME` placeholders that stand alone in an integer or boolean field (`uid: "{{vars.uid}}"`),
 * by NAME, with the type that field takes: what a stand-in value for a machine must parse as.
 */
export function typedVarsOf(parsed: ParsedTemplate): Map<string, 'integer' | 'boolean'> {
  const typed = new Map<string, 'integer' | 'boolean'>();
  const walk = (value: unknown, path: NodePath): void => {
    if (typeof value === 'string') {
      const type = SCALAR_TYPE_OF_KEY.get(keyOfPath(path));
      const [name] = variablesIn(value);
      if (
        (type === 'integer' || type === 'boolean') &&
        SINGLE_PLACEHOLDER.test(value) &&
        name?.startsWith('vars.')
      )
        typed.set(name.slice(5), type);
    } else if (Array.isArray(value)) {
      for (const [index, item] of value.entries()) walk(item, [...path, index]);
    } else if (value !== null && typeof value === 'object') {
      for (const [key, item] of Object.entries(value)) walk(item, [...path, key]);
    }
  };
  walk(parsed.data, []);
  return typed;
}

/** The key of a data path as SCALAR_TYPE_OF_KEY names it (`KEY`, or `KEY[]` for a list item). */
function keyOfPath(path: NodePath): string {
  const last = path[path.length - 1];
  if (typeof last === 'string') return last;
  const parent = path[path.length - 2];
  return typeof parent === 'string' ? `${parent}[]` : '';
}

/**
 * `uid: "{{vars.uid}}"`: the value a machine gives, read as Butane would read it written in place
 * (an integer as go-yaml reads one, goYamlInteger; true/false or YAML 1.1's yes/no/on/off), or an
 * error at the field.
 */
function typedValue(
  text: string,
  type: 'integer' | 'boolean',
  placeholder: string,
  path: NodePath,
  errors: PathError[],
): unknown {
  if (type === 'integer') {
    const integer = goYamlInteger(text);
    if (integer !== undefined) return integer;
  } else {
    const word = GO_YAML_BOOLEANS.get(text);
    if (word !== undefined) return word;
  }
  // The value is not quoted: problems reach the log and the unauthenticated explain, vars may be secrets.
  errors.push({
    path,
    message: `${placeholder} is not ${type === 'integer' ? 'an integer' : 'a boolean'} as ${String(path[path.length - 1])} takes`,
  });
  return text;
}

/** go-yaml's integers (resolve.go: strconv.ParseInt with base 0, once underscores are removed). */
const GO_YAML_INTEGER = /^([-+]?)(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)$/;
/** go-yaml's floats, which it decodes into an integer field truncated (decode.go). */
const GO_YAML_FLOAT = /^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$/;
const RADIX_OF_PREFIX: Record<string, number> = { x: 16, o: 8, b: 2 };

/**
 * The integer go-yaml (Butane's YAML reader) makes of `text` written in place in an integer field:
 * decimal, 0x hex, 0o or leading-0 octal, 0b binary, underscores anywhere, or a float cut to its
 * integer part (`420.0`, `1e3`); undefined for anything else.
 */
function goYamlInteger(text: string): number | undefined {
  // go-yaml tries a number only for a scalar starting with a digit, a sign or a dot: `_1` is a string.
  if (!/^[-+.0-9]/.test(text)) return undefined;
  const plain = text.replaceAll('_', '');
  const integer = GO_YAML_INTEGER.exec(plain);
  if (integer) {
    const [, sign, digits = ''] = integer;
    const radix = RADIX_OF_PREFIX[digits[1]?.toLowerCase() ?? ''];
    const magnitude =
      radix !== undefined
        ? Number.parseInt(digits.slice(2), radix)
        : Number.parseInt(digits, digits.length > 1 && digits.startsWith('0') ? 8 : 10);
    return sign === '-' ? -magnitude : magnitude;
  }
  return GO_YAML_FLOAT.test(plain) ? Math.trunc(Number(plain)) : undefined;
}

/** Substitutes in one string (kernel `args` use this too). */
export function substituteString(
  text: string,
  vars: TemplateVars,
  path: NodePath,
  errors: PathError[],
): string {
  if (!text.includes('{{')) return text;
  const reported = new Set<string>();
  return text.replace(PLACEHOLDER, (whole, name: string) => {
    if (LITERAL_BRACES.has(name)) return '{{';
    if (name.startsWith('vars.')) {
      const value = vars.vars?.[name.slice(5)];
      if (value !== undefined) return String(value);
      // One string naming a missing var twice is one mistake.
      if (reported.has(name)) return whole;
      reported.add(name);
      errors.push({
        path,
        message: vars.vars
          ? `{{${name}}} is not set for machine ${vars.mac} (add it under the machine's vars)`
          : `{{${name}}} cannot be filled for machines not in the inventory (unknown_machines: ${vars.profile}): they have no vars`,
      });
      return whole;
    }
    if (TOP_LEVEL_VARIABLES.has(name)) return vars[name as Exclude<keyof TemplateVars, 'vars'>];
    errors.push({ path, message: `unknown template variable {{${name}}}` });
    return whole;
  });
}

/**
 * FILE:LINE:COL of a data path, falling back to the closest enclosing node that exists in the source
 * (entries generated by the translator have no line of their own).
 */
export function problemAt(parsed: ParsedTemplate, path: NodePath, message: string, onKey = false): Problem {
  for (let length = path.length; length >= 0; length--) {
    const keyRange = onKey || length < path.length ? keyRangeOf(parsed, path.slice(0, length)) : undefined;
    if (onKey && keyRange) return { ...positionAt(parsed, keyRange[0]), message };
    const node = parsed.document.getIn(path.slice(0, length), true);
    const range = (node as { range?: [number, number, number] | null } | undefined)?.range;
    if (range) return { ...positionAt(parsed, range[0]), message };
    // A key whose value is missing or null still has a position: the key itself.
    if (keyRange) return { ...positionAt(parsed, keyRange[0]), message };
  }
  return { file: parsed.file, line: 1, col: 1, message };
}

function keyRangeOf(parsed: ParsedTemplate, path: NodePath): [number, number, number] | undefined {
  const last = path[path.length - 1];
  if (typeof last !== 'string') return undefined;
  const parent = parsed.document.getIn(path.slice(0, -1), true) as
    | { items?: { key?: { value?: unknown; range?: [number, number, number] | null } }[] }
    | undefined;
  return parent?.items?.find((item) => item.key?.value === last)?.key?.range ?? undefined;
}
