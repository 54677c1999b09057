import type { Command } from 'commander';
import { editorJsonSchema } from '../inventory/schema.js';

/** `rackboot schema`: the JSON Schema of rackboot.yaml, for yaml-language-server and other editors. */
export function registerSchema(program: Command): void {
  program
    .command('schema')
    .description('print the JSON Schema of rackboot.yaml (for editors)')
    .action(() => {
      console.log(JSON.stringify(editorJsonSchema(), null, 2));
    });
}
