import { closestName } from '../inventory/problems.js';
import { type FieldSpec, isAtLeast, type ObjectKind, type ObjectSpec, type SpecVersion } from './spec.js';
import type { NodePath, PathError } from './template.js';

export type JsonObject = Record<string, unknown>;

export interface ShapeOptions {
  version: SpecVersion;
  /** How the input spells an Ignition key: itself (Ignition JSON) or snake_case (Butane). */
  sourceKey: (key: string) => string;
  /** Keys of an object kind that are not Ignition fields and that `onObject` handles (Butane sugar). */
  extraKeys?: (kind: ObjectKind) => readonly string[];
  /**
   * The value at `path` as the template writes it, before its placeholders were filled: what a type
   * problem quotes of a string, as problems reach the log and the unauthenticated explain, and a
   * var's value may be a secret.
   */
  writtenAt?: (path: NodePath) => unknown;
  /** Called once per object after its fields are converted, with the input object and the output. */
  onObject?: (kind: ObjectKind, input: JsonObject, output: JsonObject, path: NodePath) => void;
}

export function isJsonObject(value: unknown): value is JsonObject {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * Checks a value against the Ignition spec table and returns it with Ignition's key names; `null`
 * values are dropped (Ignition treats them as unset). Unknown keys are errors with a "did you mean":
 * Ignition only warns, but in a template they are always a typo that silently does nothing.
 */
export function convertShape(
  value: unknown,
  spec: FieldSpec,
  path: NodePath,
  options: ShapeOptions,
  errors: PathError[],
): unknown {
  if (spec === 'string' || spec === 'integer' || spec === 'boolean') {
    if (checkScalar(value, spec)) return value;
    errors.push({
      path,
      message: `expected ${spec === 'integer' ? 'an integer' : `a ${spec}`}, found ${describe(value, path, options)}`,
    });
    return undefined;
  }
  if ('array' in spec) {
    if (!Array.isArray(value)) {
      errors.push({ path, message: `expected a list, found ${describe(value, path, options)}` });
      return undefined;
    }
    return value.map((item, index) => convertShape(item, spec.array, [...path, index], options, errors));
  }
  return convertObject(value, spec.object, path, options, errors);
}

function convertObject(
  value: unknown,
  spec: ObjectSpec,
  path: NodePath,
  options: ShapeOptions,
  errors: PathError[],
): JsonObject | undefined {
  if (!isJsonObject(value)) {
    errors.push({ path, message: `expected a mapping, found ${describe(value, path, options)}` });
    return undefined;
  }
  const fieldBySourceKey = sourceKeysOf(spec, options.sourceKey);
  const extras = options.extraKeys?.(spec.kind) ?? [];
  const output: JsonObject = {};
  for (const [key, item] of Object.entries(value)) {
    if (extras.includes(key)) continue;
    const field = fieldBySourceKey.get(key);
    const fieldSpec = field === undefined ? undefined : spec.fields[field];
    if (field === undefined || fieldSpec === undefined) {
      const hint = closestName(key, [...fieldBySourceKey.keys(), ...extras]);
      errors.push({
        path: [...path, key],
        message: `unknown key ${key}${hint ? `; did you mean ${hint}?` : ''}`,
        onKey: true,
      });
      continue;
    }
    const required = spec.since?.[field];
    if (required && !isAtLeast(options.version, required)) {
      errors.push({
        path: [...path, key],
        message: `${key} needs Ignition spec ${required} or later`,
        onKey: true,
      });
      continue;
    }
    if (item === null || item === undefined) continue;
    const converted = convertShape(item, fieldSpec, [...path, key], options, errors);
    if (converted !== undefined) output[field] = converted;
  }
  options.onObject?.(spec.kind, value, output, path);
  return output;
}

const sourceKeyTables = new WeakMap<ObjectSpec, Map<(key: string) => string, Map<string, string>>>();

/** Input spelling → Ignition field, built once per object spec and spelling (templates render per request). */
function sourceKeysOf(spec: ObjectSpec, sourceKey: (key: string) => string): Map<string, string> {
  let bySpelling = sourceKeyTables.get(spec);
  if (!bySpelling) {
    bySpelling = new Map();
    sourceKeyTables.set(spec, bySpelling);
  }
  let table = bySpelling.get(sourceKey);
  if (!table) {
    table = new Map(Object.keys(spec.fields).map((field) => [sourceKey(field), field]));
    bySpelling.set(sourceKey, table);
  }
  return table;
}

function checkScalar(value: unknown, type: 'string' | 'integer' | 'boolean'): boolean {
  if (type === 'integer') return Number.isInteger(value);
  return typeof value === type;
}

function describe(value: unknown, path: NodePath, options: ShapeOptions): string {
  const written = options.writtenAt?.(path);
  if (typeof value === 'string' && typeof written === 'string') return `string ${JSON.stringify(written)}`;
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return `${typeof value} ${JSON.stringify(value)}`;
}
