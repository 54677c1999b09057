import { deserialize, serialize } from 'node:v8';
import { parentPort, workerData } from 'node:worker_threads';
import type { LoadStage, ParsedConfig, ParsedFile } from './load-in-worker.js';

// Runs one stage of a load and exits, so what the stage allocated goes with its thread. Each stage
// imports only what it needs: the parse stage's peak (the YAML syntax tree and document) then shares
// the thread with no validator or template renderer.
const stage = workerData as LoadStage;
if (stage.stage === 'parse') {
  const parsed = await parseStage(stage.file);
  parentPort?.postMessage(parsed, parsed.ok ? [parsed.serialized.buffer] : []);
} else parentPort?.postMessage(await checkStage(stage));

async function parseStage(file: string): Promise<ParsedFile> {
  const { parseConfigText, readConfigFile } = await import('./parse.js');
  const read = await readConfigFile(file);
  if (!read.ok) return read;
  const parsed = parseConfigText(read.text, file);
  // The document stays behind; the check stage parses the text again if it has a problem to place.
  if (!parsed.ok) return parsed;
  return { ok: true, serialized: serialize({ text: read.text, data: parsed.data } satisfies ParsedConfig) };
}

async function checkStage(stage: Extract<LoadStage, { stage: 'check' }>) {
  const [{ checkConfigData }, { locatorOnDemand }, { checkTemplate, checkArguments }] = await Promise.all([
    import('./load.js'),
    import('./parse.js'),
    import('../ignition/check.js'),
  ]);
  const { text, data } = deserialize(stage.serialized) as ParsedConfig;
  return checkConfigData(data, locatorOnDemand(text, stage.file), stage.file, {
    missingAssets: stage.missingAssets,
    env: stage.env,
    checkTemplate,
    checkArguments,
  });
}
