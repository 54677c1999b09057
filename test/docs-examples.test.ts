import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parse, stringify } from 'yaml';
import { loadConfigText } from '../src/inventory/load.js';
import { formatProblem } from '../src/inventory/problems.js';
import { configReferenceMarkdown } from '../src/inventory/reference.js';
import { VALIDATE_CHECKS } from '../src/inventory/validate-checks.js';
import { PROJECT_ROOT, runCli } from './helpers/cli.js';

/** The README and docs/*.md, which operators copy from: their examples must keep working. */
const DOCUMENTS = ['README.md', ...readdirSync(join(PROJECT_ROOT, 'docs')).map((name) => join('docs', name))]
  .filter((name) => name.endsWith('.md'))
  .map((name) => ({ name, text: readFileSync(join(PROJECT_ROOT, name), 'utf8') }));

t.test('every YAML example in the docs is a config the loader takes', async (t) => {
  const examples = DOCUMENTS.flatMap(({ name, text }) =>
    [...text.matchAll(/^```yaml\n([\s\S]*?)^```$/gm)].map((match) => ({ name, yaml: match[1] ?? '' })),
  );
  t.ok(examples.length > 0, 'docs/fetch.md has one');
  for (const { name, yaml } of examples) {
    // A fragment (a profiles: section) gets the least a file needs around it, and no DHCP.
    const fragment = parse(yaml) as Record<string, unknown>;
    const completed = stringify({ server: { address: '127.0.0.1' }, dhcp: { mode: 'off' }, ...fragment });
    // At the top of the repository, where the templates the examples name (ignition/…) are.
    const loaded = await loadConfigText(completed, join(PROJECT_ROOT, 'docs-example.yaml'), VALIDATE_CHECKS);
    t.ok(
      loaded.ok,
      `${name}: ${yaml.split('\n')[0]}`,
      loaded.ok ? {} : { problems: loaded.problems.map((problem) => formatProblem(problem)), completed },
    );
  }
});

t.test("every option the README's command table names is one the CLI has", async (t) => {
  const readme = DOCUMENTS.find(({ name }) => name === 'README.md')?.text ?? '';
  const usages = [...readme.matchAll(/^\| `rackboot ([^`]+)` \|/gm)].map((match) => match[1] ?? '');
  t.ok(usages.length >= 12, 'one row per verb');
  const options = (text: string) => new Set(text.match(/(?<![\w-])--?[a-z][a-z-]*/g) ?? []);
  // One after the other: each starts the CLI from source, and they share the host's cores.
  for (const usage of usages) {
    const words = usage.split(' ');
    const firstArgument = words.findIndex((word) => !/^[a-z]+$/.test(word));
    const verb = firstArgument === -1 ? words : words.slice(0, firstArgument);
    const help = await runCli([...verb, '--help'], { timeoutMs: 60_000 });
    t.equal(help.code, 0, `rackboot ${verb.join(' ')} is a verb`);
    const offered = options(help.stdout);
    t.same(
      [...options(usage)].filter((option) => !offered.has(option)),
      [],
      `rackboot ${verb.join(' ')}: the options its row names`,
    );
  }
});

t.test(
  "the README's hot-reload paragraph says of every config key whether a reload applies it",
  async (t) => {
    const readme = DOCUMENTS.find(({ name }) => name === 'README.md')?.text ?? '';
    const paragraph =
      /Settings read once at start[\s\S]*?Everything else applies at the next request[^\n]*\n(?:[^\n]+\n)*/.exec(
        readme,
      )?.[0];
    t.ok(paragraph, 'the paragraph is there');
    const named = [...(paragraph ?? '').matchAll(/`([^`]+)`/g)].map((match) => match[1] ?? '');
    // `machines` and `profiles` stand for everything under them, `dhcp.*` and `server.tftp.max_*` for their keys.
    const covers = (name: string, key: string) =>
      name === key ||
      key.startsWith(`${name}.`) ||
      key.startsWith(`${name}[]`) ||
      (name.endsWith('*') && key.startsWith(name.slice(0, -1)));
    const keys = [...configReferenceMarkdown().matchAll(/^\| `([^`]+)` \|/gm)]
      .map((match) => match[1] ?? '')
      .filter((key) => key !== '$schema');
    t.same(
      keys.filter((key) => !named.some((name) => covers(name, key))),
      [],
      'keys the paragraph does not place as read at start or applied on reload',
    );
  },
);
