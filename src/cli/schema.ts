import type { Command } from 'commander';
import { configReferenceMarkdown } from '../inventory/reference.js';
import { editorJsonSchema } from '../inventory/schema.js';

/** `rackboot schema`: the JSON Schema of rackboot.yaml, for yaml-language-server and other editors. */
export function registerSchema(program: Command): void {
  program
    .command('schema')
    .description('print the JSON Schema of rackboot.yaml (for editors)')
    .option('--markdown', "print the README's config reference table instead")
    .action((options: { markdown?: boolean }) => {
      console.log(options.markdown ? configReferenceMarkdown() : JSON.stringify(editorJsonSchema(), null, 2));
    });
}
