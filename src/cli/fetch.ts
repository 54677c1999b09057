import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { fetchCoreos } from '../fetch/coreos.js';
import { FetchError } from '../fetch/download.js';
import { ARM64_IPXE_HINT, fetchIpxe, missingRequiredIpxe } from '../fetch/ipxe.js';
import { isStream, STREAMS } from '../fetch/manifest.js';
import { createReporter, type FetchReporter } from '../fetch/progress.js';
import { DEFAULT_STREAM_BASE_URL } from '../fetch/stream.js';
import { loadConfigFile } from '../inventory/load.js';
import { addConfigOption, resolveConfigPath } from './config-option.js';
import { wholeNumberIn } from './whole-number.js';

/**
 * `rackboot fetch coreos` and `rackboot fetch ipxe`: fill the assets directory. The destination is
 * `--dest`, else `server.assets` of the config file, else ./boot-assets when no config is named and there
 * is no ./rackboot.yaml.
 */
export function registerFetch(program: Command): void {
  const fetch = program
    .command('fetch')
    .description('download or copy boot assets into the assets directory');

  addConfigOption(fetch.command('coreos'))
    .description('download and verify Fedora CoreOS kernel, initramfs and rootfs from stream metadata')
    .option('--stream <stream>', `update stream: ${STREAMS.join(', ')}`, 'stable')
    .option('--arch <arch...>', 'architectures, repeatable or comma separated (x86_64, aarch64)', ['x86_64'])
    .option('--dest <dir>', 'assets directory (default: server.assets of the config, else boot-assets)')
    .option('--metadata-url <url>', `stream metadata (default: ${DEFAULT_STREAM_BASE_URL}/<stream>.json)`)
    .option('--keyring <file>', 'verify each detached signature with gpgv (default: $RACKBOOT_FETCH_KEYRING)')
    .option('--retries <n>', 'further attempts after a network failure, each resuming', '3')
    .action(async (options: CoreosOptions) => {
      const reporter = createReporter(process.stdout);
      const stream = options.stream;
      if (!isStream(stream)) throw new FetchError(`unknown stream ${stream}; choose ${STREAMS.join(', ')}`);
      const arches = options.arch.flatMap((arch) => arch.split(',')).filter((arch) => arch !== '');
      // `--arch "$ARCHES"` with the variable unset would otherwise fetch nothing and exit 0.
      if (arches.length === 0) throw new FetchError('--arch names no architecture (x86_64, aarch64, …)');
      const badArch = arches.find((arch) => !/^[a-z0-9_]+$/.test(arch));
      if (badArch !== undefined) throw new FetchError(`unknown architecture ${badArch}`);
      const retries = wholeNumberIn(options.retries, 0, Number.MAX_SAFE_INTEGER);
      if (retries === undefined) throw new FetchError('--retries wants a whole number');
      const keyring = keyringSetting(options.keyring);
      // The sha256 sums are only as trustworthy as the metadata that lists them.
      if (options.metadataUrl?.toLowerCase().startsWith('http:') && keyring === undefined) {
        process.stderr.write(
          `rackboot fetch: warning: ${options.metadataUrl} is plain HTTP and no --keyring is given: anyone on the path can change the files and their sha256 sums alike\n`,
        );
      }
      const result = await fetchCoreos({
        stream,
        arches: [...new Set(arches)],
        dest: await destination(options, reporter),
        metadataUrl: options.metadataUrl,
        keyring,
        retries,
        reporter,
        now: () => new Date(),
      });
      reporter.line(`manifest: ${result.manifestFile}`);
      // profileAssets reads the manifest per boot script, so nothing has to be reloaded.
      reporter.line(`profiles with "coreos: {stream: ${stream}}" boot this from their next boot script on`);
    });

  addConfigOption(fetch.command('ipxe'))
    .description('copy the stock iPXE boot programs from the system iPXE package into the assets directory')
    .option('--dest <dir>', 'assets directory (default: server.assets of the config, else boot-assets)')
    .option('--source <dir...>', 'directories to copy from instead of the system package locations')
    .action(async (options: IpxeOptions) => {
      const reporter = createReporter(process.stdout);
      const dest = await destination(options, reporter);
      const sourceDirs = options.source?.map((dir) => resolve(dir));
      const result = await fetchIpxe(dest, sourceDirs);
      for (const copy of result.copied) {
        const verb = copy.outcome === 'copied' ? 'copied from' : 'unchanged, from';
        reporter.line(`${copy.target}: ${verb} ${copy.source}`);
      }
      if (result.missing.some((missing) => !missing.required)) reporter.line(ARM64_IPXE_HINT);
      const missingRequired = missingRequiredIpxe(result, sourceDirs);
      if (missingRequired) throw missingRequired;
    });
}

/**
 * --keyring, else $RACKBOOT_FETCH_KEYRING. An empty value is refused rather than read as "no
 * keyring": a script whose variable expanded to nothing must not switch signature checks off.
 */
function keyringSetting(option: string | undefined): string | undefined {
  const [keyring, source] =
    option === undefined
      ? [process.env.RACKBOOT_FETCH_KEYRING, 'RACKBOOT_FETCH_KEYRING']
      : [option, '--keyring'];
  if (keyring === '') {
    throw new FetchError(`${source} is empty; name a keyring file, or leave it out to check sha256 only`);
  }
  return keyring;
}

interface DestinationOptions {
  dest?: string;
  config?: string;
}

interface CoreosOptions extends DestinationOptions {
  stream: string;
  arch: string[];
  metadataUrl?: string;
  keyring?: string;
  retries: string;
}

interface IpxeOptions extends DestinationOptions {
  source?: string[];
}

async function destination(options: DestinationOptions, reporter: FetchReporter): Promise<string> {
  if (options.dest !== undefined) return resolve(options.dest);
  const configFile = resolveConfigPath(options.config);
  if (!existsSync(configFile)) {
    // Only the implicit ./rackboot.yaml may be absent: a file named by -c or $RACKBOOT_CONFIG that is
    // not there is a typo, and filling ./boot-assets instead would leave the server's assets as they were.
    if (options.config !== undefined || process.env.RACKBOOT_CONFIG)
      throw new FetchError(
        `${configFile} does not exist; name the config whose server.assets to fill, or pass --dest`,
      );
    return resolve('boot-assets');
  }
  // Assets may legitimately be missing here: fetching them is the point.
  const loaded = await loadConfigFile(configFile, { missingAssets: 'warn' });
  if (!loaded.ok) {
    throw new FetchError(`${configFile} does not load (run rackboot validate), so pass --dest`);
  }
  reporter.line(`destination: ${loaded.config.server.assets} (server.assets of ${configFile})`);
  return loaded.config.server.assets;
}
