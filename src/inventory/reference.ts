import type { TSchema } from '@sinclair/typebox';
import { ConfigSchema } from './schema.js';

interface SchemaNode extends TSchema {
  type?: string;
  properties?: Record<string, SchemaNode>;
  patternProperties?: Record<string, SchemaNode>;
  items?: SchemaNode | SchemaNode[];
  anyOf?: SchemaNode[];
  const?: unknown;
  format?: string;
  default?: unknown;
  description?: string;
  minimum?: number;
  maximum?: number;
}

/** The README's config reference: every key, its type, default and meaning, generated from the schema. */
export function configReferenceMarkdown(): string {
  const rows: string[] = ['| key | type | default | meaning |', '| --- | --- | --- | --- |'];
  const visit = (node: SchemaNode, path: string) => {
    const container = node.type === 'object' && !node.description;
    if (path && path !== '$schema' && !path.endsWith('[]') && !container) {
      const fallback =
        node.default === undefined || isEmptyObject(node.default)
          ? ''
          : `\`${JSON.stringify(node.default)}\``;
      rows.push(
        `| \`${path}\` | ${typeName(node)} | ${fallback} | ${(node.description ?? '').replace(/\|/g, '\\|')} |`,
      );
    }
    for (const [key, child] of Object.entries(node.properties ?? {}))
      visit(child, path ? `${path}.${key}` : key);
    const record = Object.values(node.patternProperties ?? {})[0];
    if (record) visit(record, `${path}.<name>`);
    const item = Array.isArray(node.items) ? undefined : node.items;
    if (item?.properties) visit(item, `${path}[]`);
  };
  visit(ConfigSchema as SchemaNode, '');
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
  return node.type ?? 'any';
}

function isEmptyObject(value: unknown): boolean {
  return typeof value === 'object' && value !== null && Object.keys(value).length === 0;
}
