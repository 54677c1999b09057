import type { TSchema } from '@sinclair/typebox';
import { ConfigSchema } from './schema.js';

interface SchemaNode extends TSchema {
  type?: string;
  properties?: Record<string, SchemaNode>;
  required?: string[];
  patternProperties?: Record<string, SchemaNode>;
  items?: SchemaNode | SchemaNode[];
  anyOf?: SchemaNode[];
  const?: unknown;
  format?: string;
  default?: unknown;
  description?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
}

/** A map's entries in key paths: `profiles.<name>.kind`. An entry is there if its map has it, never "required". */
const MAP_ENTRY = '<name>';

/**
 * The README's config reference: every key, its type, default and meaning, generated from the schema.
 * A key that must be in every file (or in every list item or map entry) shows **required** in place
 * of a default; one required only inside an optional section, or only in some cases, says so in
 * its meaning.
 */
export function configReferenceMarkdown(): string {
  const rows: string[] = ['| key | type | default | meaning |', '| --- | --- | --- | --- |'];
  /** `always`: the node is there whenever its list item or map entry is (required, or defaulted). */
  const visit = (node: SchemaNode, path: string, always: boolean) => {
    const container = node.type === 'object' && !node.description;
    if (path && !path.endsWith('[]') && !container) {
      const fallback =
        node.default !== undefined
          ? `\`${JSON.stringify(node.default)}\``
          : always && !path.endsWith(MAP_ENTRY)
            ? '**required**'
            : '';
      rows.push(
        `| \`${path}\` | ${typeName(node)} | ${fallback} | ${(node.description ?? '').replace(/\|/g, '\\|')} |`,
      );
    }
    for (const [key, child] of Object.entries(node.properties ?? {})) {
      const childAlways = always && (node.required?.includes(key) === true || child.default !== undefined);
      visit(child, path ? `${path}.${key}` : key, childAlways);
    }
    const record = Object.values(node.patternProperties ?? {})[0];
    if (record) visit(record, `${path}.${MAP_ENTRY}`, true);
    const item = Array.isArray(node.items) ? undefined : node.items;
    if (item?.properties) visit(item, `${path}[]`, true);
  };
  visit(ConfigSchema as SchemaNode, '', true);
  return rows.join('\n');
}

function typeName(node: SchemaNode): string {
  if (node.anyOf?.every((member) => member.const !== undefined)) {
    return node.anyOf.map((member) => `\`${String(member.const)}\``).join(' \\| ');
  }
  if (node.anyOf?.some((member) => typeName(member) === 'duration')) return 'duration';
  if (node.anyOf) return node.anyOf.map(typeName).join(' or ');
  if (node.format === 'ipv4') return 'IPv4';
  if (node.type === 'array') {
    if (Array.isArray(node.items)) return `[${node.items.map(typeName).join(', ')}]`;
    return `list of ${node.items ? typeName(node.items) : 'values'}`;
  }
  if (node.type === 'object' && node.patternProperties) return 'map';
  if (node.type === 'integer' && node.minimum !== undefined) {
    return `integer ${node.minimum}–${node.maximum ?? '∞'}`;
  }
  if ((node as { pattern?: string }).pattern?.includes('ms|s|m|h|d')) return 'duration';
  // The loader refuses a shorter one (server.api_token), so the reference says so.
  if (node.type === 'string' && node.minLength !== undefined)
    return `string, at least ${node.minLength} characters`;
  return node.type ?? 'any';
}
