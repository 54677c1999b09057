import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { type FetchCoreosOptions, fetchCoreos, LOCK_PATH } from '../src/fetch/coreos.js';
import { MANIFEST_PATH, PXE_ARTIFACTS, type PxeArtifact, parseManifest } from '../src/fetch/manifest.js';
import { createReporter } from '../src/fetch/progress.js';
import { machineScript } from '../src/http/machine-script.js';
import { loadConfigText } from '../src/inventory/load.js';
import { profileAssets } from '../src/inventory/profile-assets.js';
import type { Config } from '../src/inventory/schema.js';

const run = promisify(execFile);
const RELEASE = '43.20261101.3.0';
const SIZES: Record<PxeArtifact, number> = { kernel: 24_000, initramfs: 40_000, rootfs: 300_000 };

interface Served {
  content: Buffer;
  signature?: Buffer;
}

/**
 * A stand-in for builds.coreos.fedoraproject.org on 127.0.0.1: one stream document and the PXE
 * artifacts it lists (random bytes with their real sha256), with switches for the failures a real
 * mirror shows: a connection cut mid-body, no Range support, a stall, a wrong checksum.
 */
async function startMirror(t: Test, arches = ['x86_64', 'aarch64']) {
  const files = new Map<string, Served>();
  const requests: { path: string; range: string | undefined }[] = [];
  const behaviour = {
    cutOnce: new Set<string>(),
    stall: new Set<string>(),
    ignoreRange: false,
    wrongSha: new Set<string>(),
    metadataStatus: 200,
  };
  const locations: Record<string, Record<PxeArtifact, string>> = {};
  const server = createServer((request, response) => serve(request, response));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });

  let release = '';
  /** A new build: fresh artifacts under new names; the old ones stay downloadable, as on the real mirror. */
  const publish = (newRelease: string) => {
    release = newRelease;
    for (const arch of arches) {
      locations[arch] = {} as Record<PxeArtifact, string>;
      for (const artifact of PXE_ARTIFACTS) {
        const name = `fedora-coreos-${release}-live-${artifact}.${arch}${artifact === 'kernel' ? '' : '.img'}`;
        const path = `/prod/streams/stable/builds/${release}/${arch}/${name}`;
        files.set(path, { content: randomBytes(SIZES[artifact]) });
        locations[arch][artifact] = path;
      }
    }
  };
  publish(RELEASE);

  const metadata = (stream = 'stable') => ({
    stream,
    metadata: { 'last-modified': '2026-11-01T00:00:00Z', generator: 'rackboot test' },
    architectures: Object.fromEntries(
      Object.entries(locations).map(([arch, paths]) => [
        arch,
        {
          artifacts: {
            metal: {
              release,
              formats: {
                pxe: Object.fromEntries(
                  PXE_ARTIFACTS.map((artifact) => {
                    const path = paths[artifact];
                    const content = files.get(path)?.content ?? Buffer.alloc(0);
                    const sha256 = behaviour.wrongSha.has(path)
                      ? createHash('sha256').update('something else').digest('hex')
                      : createHash('sha256').update(content).digest('hex');
                    return [artifact, { location: base + path, signature: `${base}${path}.sig`, sha256 }];
                  }),
                ),
              },
            },
          },
        },
      ]),
    ),
  });

  function serve(request: IncomingMessage, response: ServerResponse) {
    const path = request.url ?? '/';
    requests.push({ path, range: request.headers.range });
    const streamDocument = /^\/streams\/(\w+)\.json$/.exec(path);
    if (streamDocument) {
      if (behaviour.metadataStatus !== 200) {
        response.writeHead(behaviour.metadataStatus).end();
        return;
      }
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify(metadata(streamDocument[1])));
      return;
    }
    const signatureOf = path.endsWith('.sig') ? files.get(path.slice(0, -4))?.signature : undefined;
    if (signatureOf) {
      response.writeHead(200).end(signatureOf);
      return;
    }
    const file = files.get(path);
    if (!file) {
      response.writeHead(404).end();
      return;
    }
    const content = file.content;
    if (behaviour.stall.has(path)) {
      // Headers and a first chunk, then silence: the idle timer must cover the body, not only the headers.
      response.writeHead(200, { 'content-length': content.length });
      response.write(content.subarray(0, 1000));
      return;
    }
    const range = /^bytes=(\d+)-$/.exec(request.headers.range ?? '');
    if (range && !behaviour.ignoreRange) {
      const start = Number(range[1]);
      if (start >= content.length) {
        response.writeHead(416, { 'content-range': `bytes */${content.length}` }).end();
        return;
      }
      response.writeHead(206, {
        'content-length': content.length - start,
        'content-range': `bytes ${start}-${content.length - 1}/${content.length}`,
      });
      response.end(content.subarray(start));
      return;
    }
    response.writeHead(200, { 'content-length': content.length });
    if (behaviour.cutOnce.delete(path)) {
      response.write(content.subarray(0, Math.floor(content.length / 3)), () => request.socket.destroy());
      return;
    }
    response.end(content);
  }

  const artifactRequests = () => requests.filter((entry) => entry.path.startsWith('/prod/'));
  return { base, files, locations, behaviour, requests, artifactRequests, publish };
}

function tempDir(t: Test, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function options(
  mirror: { base: string },
  dest: string,
  extra: Partial<FetchCoreosOptions> = {},
): FetchCoreosOptions & { output: string[] } {
  const output: string[] = [];
  return {
    stream: 'stable',
    arches: ['x86_64'],
    dest,
    metadataUrl: `${mirror.base}/streams/stable.json`,
    reporter: createReporter({ write: (text: string) => output.push(text) }),
    now: () => new Date('2026-11-25T12:00:00Z'),
    retryDelayMs: 0,
    output,
    ...extra,
  };
}

/** Every file under dir, relative, so a test can say exactly what was left behind. */
function listFiles(dir: string, prefix = ''): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? listFiles(join(dir, entry.name), `${prefix}${entry.name}/`)
      : [`${prefix}${entry.name}`],
  );
}

t.test('full fetch of two architectures writes verified files and the manifest', async (t) => {
  const mirror = await startMirror(t);
  const dest = tempDir(t, 'rackboot-fetch-');
  const run1 = options(mirror, dest, { arches: ['x86_64', 'aarch64'] });
  const result = await fetchCoreos(run1);

  t.equal(result.manifestFile, join(dest, MANIFEST_PATH));
  const manifest = parseManifest(readFileSync(result.manifestFile, 'utf8'));
  if ('error' in manifest) throw new Error(manifest.error);
  for (const arch of ['x86_64', 'aarch64']) {
    const entry = manifest.streams.stable?.[arch];
    t.equal(entry?.release, RELEASE, `${arch} release recorded`);
    t.equal(entry?.metadata_url, `${mirror.base}/streams/stable.json`);
    t.equal(entry?.fetched_at, '2026-11-25T12:00:00.000Z');
    for (const artifact of PXE_ARTIFACTS) {
      const served = mirror.files.get(mirror.locations[arch]?.[artifact] ?? '');
      const file = entry?.[artifact];
      t.match(
        file?.path,
        new RegExp(`^fedora-coreos/stable/${arch}/fedora-coreos-${RELEASE}-live-${artifact}`),
      );
      t.ok(
        served && file && readFileSync(join(dest, file.path)).equals(served.content),
        `${arch} ${artifact} bytes`,
      );
      t.equal(
        file?.sha256,
        createHash('sha256')
          .update(served?.content ?? '')
          .digest('hex'),
      );
      t.equal(file?.url, mirror.base + (mirror.locations[arch]?.[artifact] ?? ''));
    }
  }
  t.same(
    listFiles(dest).filter((name) => name.endsWith('.part') || name.endsWith('.tmp')),
    [],
    'no temporary files left',
  );
  t.equal(mirror.artifactRequests().length, 6, 'six artifacts, one request each');
  const text = run1.output.join('');
  t.match(text, `x86_64: Fedora CoreOS ${RELEASE}`);
  t.match(text, /x86_64 rootfs: downloading\n/);
  t.match(text, /x86_64 rootfs: downloaded, 293\.0 KiB, sha256 verified\n/);
  t.notMatch(text, '\r', 'no terminal redraws when the output is not a TTY');

  t.test('a second run downloads nothing', async (t) => {
    const before = mirror.artifactRequests().length;
    const run2 = options(mirror, dest, { arches: ['x86_64', 'aarch64'] });
    await fetchCoreos(run2);
    t.equal(mirror.artifactRequests().length, before, 'no artifact requested again');
    t.equal(run2.output.join('').match(/already present/g)?.length, 6);
  });

  t.test('the manifest resolves a profile naming the stream', async (t) => {
    const profile = { kind: 'coreos-install' as const, coreos: { stream: 'stable' as const }, args: [] };
    const assets = profileAssets(profile, 'aarch64', dest);
    t.same(assets, {
      kernel: manifest.streams.stable?.aarch64?.kernel.path,
      initrd: [manifest.streams.stable?.aarch64?.initramfs.path],
      rootfs: manifest.streams.stable?.aarch64?.rootfs.path,
    });
  });
});

t.test('an interrupted download resumes with Range on the next run', async (t) => {
  const mirror = await startMirror(t, ['x86_64']);
  const dest = tempDir(t, 'rackboot-fetch-');
  const rootfsPath = mirror.locations.x86_64?.rootfs ?? '';
  mirror.behaviour.cutOnce.add(rootfsPath);

  await t.rejects(
    fetchCoreos(options(mirror, dest, { retries: 0 })),
    /download from 127\.0\.0\.1:\d+ interrupted/,
  );
  const target = join(dest, 'fedora-coreos/stable/x86_64', rootfsPath.split('/').pop() ?? '');
  t.notOk(existsSync(target), 'no file under the final name');
  const partial = statSync(`${target}.part`).size;
  t.ok(partial > 0 && partial < SIZES.rootfs, `the .part keeps the ${partial} bytes received`);
  t.notOk(existsSync(join(dest, MANIFEST_PATH)), 'no manifest for an incomplete release');

  const second = options(mirror, dest);
  await fetchCoreos(second);
  const rootfsRequests = mirror.requests.filter((entry) => entry.path === rootfsPath);
  t.same(
    rootfsRequests.map((entry) => entry.range),
    [undefined, `bytes=${partial}-`],
    'the second request asks for the rest',
  );
  t.ok(
    readFileSync(target).equals(mirror.files.get(rootfsPath)?.content ?? Buffer.alloc(0)),
    'file complete',
  );
  t.notOk(existsSync(`${target}.part`));
  t.match(second.output.join(''), `x86_64 rootfs: resuming at ${(partial / 1024).toFixed(1)} KiB`);
  t.match(second.output.join(''), /x86_64 rootfs: resumed, 293\.0 KiB, sha256 verified/);
});

t.test('a cut connection is retried within the same run, resuming', async (t) => {
  const mirror = await startMirror(t, ['x86_64']);
  const dest = tempDir(t, 'rackboot-fetch-');
  const rootfsPath = mirror.locations.x86_64?.rootfs ?? '';
  mirror.behaviour.cutOnce.add(rootfsPath);
  const run1 = options(mirror, dest, { retries: 1 });
  await fetchCoreos(run1);
  const ranges = mirror.requests.filter((entry) => entry.path === rootfsPath).map((entry) => entry.range);
  t.equal(ranges.length, 2);
  t.match(ranges[1], /^bytes=\d+-$/);
  t.match(run1.output.join(''), /x86_64 rootfs: download from .* interrupted: .*; retrying in 0s/);
});

t.test('a server without Range support restarts the file from the first byte', async (t) => {
  const mirror = await startMirror(t, ['x86_64']);
  const dest = tempDir(t, 'rackboot-fetch-');
  const rootfsPath = mirror.locations.x86_64?.rootfs ?? '';
  mirror.behaviour.cutOnce.add(rootfsPath);
  mirror.behaviour.ignoreRange = true;
  await t.rejects(fetchCoreos(options(mirror, dest)), /interrupted/);
  await fetchCoreos(options(mirror, dest));
  const target = join(dest, 'fedora-coreos/stable/x86_64', rootfsPath.split('/').pop() ?? '');
  t.ok(readFileSync(target).equals(mirror.files.get(rootfsPath)?.content ?? Buffer.alloc(0)));
});

t.test('checksum mismatch: an error, and neither file nor .part left', async (t) => {
  const mirror = await startMirror(t, ['x86_64']);
  const dest = tempDir(t, 'rackboot-fetch-');
  const initramfsPath = mirror.locations.x86_64?.initramfs ?? '';
  mirror.behaviour.wrongSha.add(initramfsPath);
  await t.rejects(
    fetchCoreos(options(mirror, dest)),
    /checksum mismatch for .*live-initramfs\.x86_64\.img: expected sha256 [0-9a-f]{64}, got [0-9a-f]{64}; the download was removed/,
  );
  t.same(
    listFiles(dest),
    [`fedora-coreos/stable/x86_64/fedora-coreos-${RELEASE}-live-kernel.x86_64`],
    'only the kernel, which verified, is there; no manifest',
  );
});

t.test('unknown architecture and stream: errors before any download', async (t) => {
  const mirror = await startMirror(t, ['x86_64']);
  const dest = tempDir(t, 'rackboot-fetch-');
  await t.rejects(
    fetchCoreos(options(mirror, dest, { arches: ['x86_64', 'arm64'] })),
    /unknown architecture arm64 \(did you mean aarch64\?\); the stable stream has x86_64/,
  );
  await t.rejects(
    fetchCoreos(options(mirror, dest, { stream: 'testing' })),
    /describes stream stable, not testing/,
  );
  t.equal(mirror.artifactRequests().length, 0, 'nothing downloaded');
  t.same(listFiles(dest), []);

  const cli = await run(
    process.execPath,
    ['--import', 'tsx', 'src/cli/main.ts', 'fetch', 'coreos', '--stream', 'stabel', '--dest', dest],
    { cwd: join(import.meta.dirname, '..') },
  ).catch((error: { code: number; stderr: string }) => error);
  t.equal((cli as { code?: number }).code, 1, 'the CLI exits 1');
  t.match(cli.stderr, 'unknown stream stabel; choose stable, testing, next');
});

t.test('HTTP errors, unreachable servers and stalls are one clear line', async (t) => {
  const mirror = await startMirror(t, ['x86_64']);
  const dest = tempDir(t, 'rackboot-fetch-');
  mirror.behaviour.metadataStatus = 404;
  await t.rejects(
    fetchCoreos(options(mirror, dest)),
    /GET http:\/\/127\.0\.0\.1:\d+\/streams\/stable\.json: HTTP 404 Not Found/,
  );
  mirror.behaviour.metadataStatus = 200;

  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const closedPort = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  await t.rejects(
    fetchCoreos(options({ base: `http://127.0.0.1:${closedPort}` }, dest)),
    new RegExp(`cannot reach 127\\.0\\.0\\.1:${closedPort}: ECONNREFUSED`),
  );

  mirror.behaviour.stall.add(mirror.locations.x86_64?.kernel ?? '');
  await t.rejects(
    fetchCoreos(options(mirror, dest, { idleTimeoutMs: 300 })),
    /127\.0\.0\.1:\d+ sent no data for 0\.3s/,
  );
  t.same(
    listFiles(dest).filter((name) => !name.endsWith('.part')),
    [],
    'nothing under a final name',
  );
});

t.test('disk full is reported and leaves no file under its final name', async (t) => {
  const mirror = await startMirror(t, ['x86_64']);
  const dest = tempDir(t, 'rackboot-fetch-enospc-');
  // A real filesystem that runs out: tmpfs smaller than the rootfs (root, as CI runs).
  await run('mount', ['-t', 'tmpfs', '-o', 'size=192k', 'rackboot-test', dest]);
  t.teardown(() => run('umount', [dest]));
  await t.rejects(
    fetchCoreos(options(mirror, dest)),
    /disk full writing .*live-rootfs\.x86_64\.img\.part after \d+ bytes; free space and run again to resume/,
  );
  t.notOk(
    listFiles(dest).some((name) => name.endsWith('rootfs.x86_64.img')),
    'the rootfs is only a .part',
  );
});

t.test('GPG: a good signature passes, a bad one removes the file', async (t) => {
  const gnupgHome = tempDir(t, 'rackboot-gnupg-');
  const env = { ...process.env, GNUPGHOME: gnupgHome };
  t.teardown(() => run('gpgconf', ['--kill', 'all'], { env }).catch(() => undefined));
  await run(
    'gpg',
    [
      '--batch',
      '--passphrase',
      '',
      '--quick-gen-key',
      'rackboot test <test@example.invalid>',
      'ed25519',
      'sign',
      'never',
    ],
    { env },
  );
  const keyring = join(gnupgHome, 'signing-key.asc');
  const armored = (await run('gpg', ['--batch', '--armor', '--export'], { env })).stdout;
  writeFileSync(keyring, armored);
  const sign = async (content: Buffer) => {
    const input = join(gnupgHome, 'to-sign');
    writeFileSync(input, content);
    await run('gpg', ['--batch', '--yes', '--detach-sign', '-o', `${input}.sig`, input], { env });
    return readFileSync(`${input}.sig`);
  };

  const mirror = await startMirror(t, ['x86_64']);
  for (const path of Object.values(mirror.locations.x86_64 ?? {})) {
    const served = mirror.files.get(path);
    if (served) served.signature = await sign(served.content);
  }
  const dest = tempDir(t, 'rackboot-fetch-');
  await t.rejects(
    fetchCoreos(options(mirror, dest, { keyring: join(gnupgHome, 'typo.asc') })),
    /cannot read keyring .*typo\.asc: ENOENT/,
  );
  t.equal(mirror.artifactRequests().length, 0, 'a bad --keyring fails before any download');
  const good = options(mirror, dest, { keyring });
  await fetchCoreos(good);
  t.match(good.output.join(''), /x86_64 rootfs: downloaded, 293\.0 KiB, sha256 and signature verified/);
  const directory = join(dest, 'fedora-coreos/stable/x86_64');
  t.equal(readdirSync(directory).filter((name) => name.endsWith('.sig')).length, 3, 'signatures kept');

  const rootfsPath = mirror.locations.x86_64?.rootfs ?? '';
  const rootfs = mirror.files.get(rootfsPath);
  if (rootfs) rootfs.signature = await sign(Buffer.from('a different file'));
  const fresh = tempDir(t, 'rackboot-fetch-');
  await t.rejects(
    fetchCoreos(options(mirror, fresh, { keyring })),
    /signature check of .*rootfs.*failed.*BAD signature/,
  );
  t.same(
    listFiles(fresh).filter((name) => name.includes('rootfs')),
    [],
    'neither rootfs, .part nor .sig left',
  );
});

t.test('the CLI fetches into server.assets of the config and prints where the manifest is', async (t) => {
  const mirror = await startMirror(t, ['x86_64']);
  const directory = tempDir(t, 'rackboot-fetch-');
  const config = join(directory, 'rackboot.yaml');
  writeFileSync(config, 'server:\n  address: 10.77.0.1\n  assets: served-here\n');
  const { stdout } = await run(
    process.execPath,
    [
      '--import',
      'tsx',
      'src/cli/main.ts',
      'fetch',
      'coreos',
      '-c',
      config,
      '--metadata-url',
      `${mirror.base}/streams/stable.json`,
    ],
    { cwd: join(import.meta.dirname, '..') },
  );
  const dest = join(directory, 'served-here');
  t.match(stdout, `destination: ${dest} (server.assets of ${config})`);
  t.match(stdout, `manifest: ${join(dest, MANIFEST_PATH)}`);
  t.ok(existsSync(join(dest, MANIFEST_PATH)));
});

t.test(
  'a profile naming the stream boots the fetched release; the next fetch switches it, without reload',
  async (t) => {
    const mirror = await startMirror(t, ['x86_64']);
    const directory = tempDir(t, 'rackboot-config-');
    const yaml = `server:
  address: 10.77.0.1
profiles:
  fcos:
    kind: coreos-install
    coreos: { stream: stable }
    install_device: /dev/vda
machines:
  - { mac: 52:54:00:12:34:56, hostname: node1, profile: fcos }
`;
    const file = join(directory, 'rackboot.yaml');
    const dest = join(directory, 'boot-assets');
    const baseUrl = 'http://10.77.0.1:8080';
    const scriptFor = (config: Config) => {
      const machine = config.machines[0];
      if (!machine) throw new Error('no machine');
      const assignment = {
        mac: machine.mac,
        hostname: machine.hostname,
        profile: machine.profile,
        ip: undefined,
        listed: true,
        state: undefined,
      };
      const vars = {
        mac: machine.mac,
        hostname: 'node1',
        ip: '',
        profile: 'fcos',
        base_url: baseUrl,
        ignition_url: `${baseUrl}/ignition/${machine.mac}`,
        events_url: `${baseUrl}/api/v1/machines/${machine.mac}/events`,
        vars: {},
      };
      return machineScript(config, machine.mac, assignment, 'x86_64', vars);
    };
    const expectUrls = (script: string, release: string) => {
      const dir = `${baseUrl}/assets/fedora-coreos/stable/x86_64/fedora-coreos-${release}-live`;
      t.match(
        script,
        `kernel ${dir}-kernel.x86_64 initrd=main coreos.live.rootfs_url=${dir}-rootfs.x86_64.img `,
      );
      t.match(script, `initrd --name main ${dir}-initramfs.x86_64.img`);
    };

    const before = await loadConfigText(yaml, file);
    t.match(
      before,
      {
        ok: false,
        problems: [{ message: /manifest\.json does not exist; run rackboot fetch coreos --stream stable/ }],
      },
      'serve refuses before the fetch',
    );

    await fetchCoreos(options(mirror, dest));
    const loaded = await loadConfigText(yaml, file);
    if (!loaded.ok) throw new Error(loaded.problems.map((problem) => problem.message).join('\n'));
    const first = scriptFor(loaded.config);
    t.equal(first.kind, 'install');
    expectUrls(first.script, RELEASE);

    mirror.publish('43.20261115.3.0');
    await fetchCoreos(options(mirror, dest));
    // The same loaded config: the manifest is read per script, so no reload or restart is needed.
    expectUrls(scriptFor(loaded.config).script, '43.20261115.3.0');
  },
);

t.test('one fetch at a time per assets directory; a dead owner’s lock is taken over', async (t) => {
  const mirror = await startMirror(t, ['x86_64']);
  const dest = tempDir(t, 'rackboot-fetch-');
  const lockFile = join(dest, LOCK_PATH);
  mkdirSync(dirname(lockFile), { recursive: true });
  writeFileSync(lockFile, `${process.pid}\n`);
  await t.rejects(
    fetchCoreos(options(mirror, dest)),
    new RegExp(`another fetch \\(pid ${process.pid}\\) is writing here; wait for it or remove ${lockFile}`),
  );
  t.equal(mirror.artifactRequests().length, 0);

  const exited = spawn('true');
  await new Promise((resolve) => exited.on('exit', resolve));
  writeFileSync(lockFile, `${exited.pid}\n`);
  await fetchCoreos(options(mirror, dest));
  t.ok(existsSync(join(dest, MANIFEST_PATH)), 'the fetch ran');
  t.notOk(existsSync(lockFile), 'and released the lock');
});
