import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import * as fsPromises from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { type FetchCoreosOptions, fetchCoreos, LOCK_PATH } from '../src/fetch/coreos.js';
import { withLock } from '../src/fetch/lock.js';
import { MANIFEST_PATH, PXE_ARTIFACTS, type PxeArtifact, parseManifest } from '../src/fetch/manifest.js';
import { createReporter } from '../src/fetch/progress.js';
import { machineScript } from '../src/http/machine-script.js';
import { loadConfigText } from '../src/inventory/load.js';
import { profileAssets } from '../src/inventory/profile-assets.js';
import type { Config } from '../src/inventory/schema.js';
import { runCli } from './helpers/cli.js';

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
 * mirror shows: a connection cut mid-body, no Range support, short ranges, a stall, a wrong checksum.
 */
async function startMirror(t: Test, arches = ['x86_64', 'aarch64']) {
  const files = new Map<string, Served>();
  const requests: { path: string; range: string | undefined }[] = [];
  const behaviour = {
    cutOnce: new Set<string>(),
    stall: new Set<string>(),
    ignoreRange: false,
    /** Answer Range with a 206 that covers only the next 1000 bytes (legal, but not the rest). */
    shortRange: false,
    /** Answer one Range request with a chunked 206 (no Content-Length) whose body ends cleanly halfway. */
    endEarlyOnce: new Set<string>(),
    wrongSha: new Set<string>(),
    metadataStatus: 200,
    /** Answer the stream document with a 503 this many times first (a mirror failing over). */
    metadataUnavailable: 0,
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
      if (behaviour.metadataUnavailable > 0) {
        behaviour.metadataUnavailable -= 1;
        response.writeHead(503).end();
        return;
      }
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
      if (behaviour.endEarlyOnce.delete(path)) {
        response.writeHead(206, {
          'content-range': `bytes ${start}-${content.length - 1}/${content.length}`,
        });
        response.end(content.subarray(start, start + Math.floor((content.length - start) / 2)));
        return;
      }
      const end = behaviour.shortRange ? Math.min(start + 1000, content.length) - 1 : content.length - 1;
      response.writeHead(206, {
        'content-length': end + 1 - start,
        'content-range': `bytes ${start}-${end}/${content.length}`,
      });
      response.end(content.subarray(start, end + 1));
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

/**
 * Every file under dir, relative, so a test can say exactly what was left behind; except the
 * fetch lock, whose newest entry stays after each run (the lock tests look at it).
 */
function listFiles(dir: string, prefix = ''): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = `${prefix}${entry.name}`;
    if (path === LOCK_PATH) return [];
    return entry.isDirectory() ? listFiles(join(dir, entry.name), `${path}/`) : [path];
  });
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

t.test('a body that ends cleanly before its Content-Range total is resumed, not thrown away', async (t) => {
  // A proxy cutting a chunked 206 short: before, the digest of the short file failed and the bytes
  // kept from before were discarded as damaged.
  const mirror = await startMirror(t, ['x86_64']);
  const dest = tempDir(t, 'rackboot-fetch-');
  const rootfsPath = mirror.locations.x86_64?.rootfs ?? '';
  const content = mirror.files.get(rootfsPath)?.content ?? Buffer.alloc(0);
  const directory = join(dest, 'fedora-coreos/stable/x86_64');
  mkdirSync(directory, { recursive: true });
  writeFileSync(join(directory, `${basename(rootfsPath)}.part`), content.subarray(0, 1000));
  mirror.behaviour.endEarlyOnce.add(rootfsPath);
  const run1 = options(mirror, dest, { retries: 1 });
  await fetchCoreos(run1);
  t.match(
    run1.output.join(''),
    /x86_64 rootfs: download from .* interrupted: the body ended after \d+ of 300000 bytes/,
  );
  const ranges = mirror.requests.filter((entry) => entry.path === rootfsPath).map((entry) => entry.range);
  const resumedAt = Number(/^bytes=(\d+)-$/.exec(ranges[1] ?? '')?.[1]);
  t.ok(resumedAt > 1000, `the retry resumed after the bytes received (at ${resumedAt})`);
  t.ok(readFileSync(join(directory, basename(rootfsPath))).equals(content), 'and the file is whole');
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

t.test(
  'a damaged .part fails the resumed checksum; one attempt from the first byte repairs it',
  async (t) => {
    const mirror = await startMirror(t, ['x86_64']);
    const dest = tempDir(t, 'rackboot-fetch-');
    const rootfsPath = mirror.locations.x86_64?.rootfs ?? '';
    const target = join(dest, 'fedora-coreos/stable/x86_64', basename(rootfsPath));
    const good = mirror.files.get(rootfsPath)?.content ?? Buffer.alloc(0);
    // What a machine crash can leave: the first bytes right, then zeros where the data never landed.
    const damaged = Buffer.concat([good.subarray(0, 100_000), Buffer.alloc(4096)]);
    mkdirSync(dirname(target), { recursive: true });

    writeFileSync(`${target}.part`, damaged);
    await t.rejects(
      fetchCoreos(options(mirror, dest, { retries: 0 })),
      /checksum mismatch for .*live-rootfs\.x86_64\.img after resuming at byte 104096, so the bytes kept from before were probably damaged; the \.part was removed, so the next attempt downloads from the first byte/,
      'without retries: a message that points at the kept bytes, not at the mirror',
    );
    t.notOk(existsSync(`${target}.part`), 'the damaged .part is gone');

    writeFileSync(`${target}.part`, damaged);
    const retried = options(mirror, dest, { retries: 3 });
    await fetchCoreos(retried);
    t.ok(readFileSync(target).equals(good), 'with retries: the file is complete');
    t.same(
      mirror.requests.filter((entry) => entry.path === rootfsPath).map((entry) => entry.range),
      ['bytes=104096-', 'bytes=104096-', undefined],
      'each run resumed once; the retry started from the first byte',
    );
    t.match(retried.output.join(''), /x86_64 rootfs: checksum mismatch .* after resuming .*; retrying in 0s/);
  },
);

t.test('a 206 that covers less than the rest is not appended; the download starts over', async (t) => {
  const mirror = await startMirror(t, ['x86_64']);
  const dest = tempDir(t, 'rackboot-fetch-');
  mirror.behaviour.shortRange = true;
  const rootfsPath = mirror.locations.x86_64?.rootfs ?? '';
  const target = join(dest, 'fedora-coreos/stable/x86_64', basename(rootfsPath));
  const good = mirror.files.get(rootfsPath)?.content ?? Buffer.alloc(0);
  mkdirSync(dirname(target), { recursive: true });
  writeFileSync(`${target}.part`, good.subarray(0, 200_000));

  const run1 = options(mirror, dest, { retries: 1 });
  await fetchCoreos(run1);
  t.ok(readFileSync(target).equals(good));
  t.same(
    mirror.requests.filter((entry) => entry.path === rootfsPath).map((entry) => entry.range),
    ['bytes=200000-', undefined],
  );
  t.match(
    run1.output.join(''),
    `x86_64 rootfs: GET ${mirror.base}${rootfsPath}: asked for bytes 200000- but got bytes 200000-200999/300000; ` +
      'the .part was removed, so the next attempt downloads from the first byte; retrying in 0s',
  );
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

t.test('a redirect loop is named as one, not as an unreachable host, and not retried', async (t) => {
  let requests = 0;
  const looping = createServer((request, response) => {
    requests += 1;
    response.writeHead(302, { location: request.url ?? '/' }).end();
  });
  await new Promise<void>((resolve) => looping.listen(0, '127.0.0.1', resolve));
  t.teardown(() => looping.close());
  const base = `http://127.0.0.1:${(looping.address() as AddressInfo).port}`;
  const dest = tempDir(t, 'rackboot-fetch-');
  const error = await fetchCoreos(options({ base }, dest, { retries: 2 })).catch((caught: Error) => caught);
  t.match(String(error), /GET http:\/\/127\.0\.0\.1:\d+\/streams\/stable\.json: too many redirects/);
  t.notMatch(String(error), /cannot reach/);
  t.equal(requests, 21, 'one attempt: the initial request and 20 redirects');
});

t.test('the stream metadata is retried under --retries, as the artifacts are', async (t) => {
  const mirror = await startMirror(t, ['x86_64']);
  const dest = tempDir(t, 'rackboot-fetch-');
  mirror.behaviour.metadataUnavailable = 2;
  const retried = options(mirror, dest, { retries: 2 });
  const result = await fetchCoreos(retried);
  t.equal(result.entries.length, 1, 'fetched after two 503s');
  t.equal(
    retried.output.filter((line) => /stable\.json: .*HTTP 503.*; retrying in/.test(line)).length,
    2,
    'each retry said so',
  );
  mirror.behaviour.metadataUnavailable = 1;
  await t.rejects(
    fetchCoreos(options(mirror, dest, { retries: 0 })),
    /HTTP 503/,
    'no retries: the 503 ends it',
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
  const part = listFiles(dest).find((name) => name.endsWith('rootfs.x86_64.img.part'));
  t.ok(part !== undefined && statSync(join(dest, part)).size > 0, 'the .part is kept for resuming');

  await run('mount', ['-o', 'remount,size=1m', dest]);
  const again = options(mirror, dest);
  await fetchCoreos(again);
  t.match(
    again.output.join(''),
    /x86_64 rootfs: resumed, 293\.0 KiB, sha256 verified/,
    'with space, it resumes',
  );
});

/** downloadVerified writing its .part through what `wrap` makes of the real file handle (a disk that misbehaves). */
async function downloadThrough(t: Test, wrap: (handle: fsPromises.FileHandle) => object) {
  const { downloadVerified } = await t.mockImport<typeof import('../src/fetch/download.js')>(
    '../src/fetch/download.js',
    {
      'node:fs/promises': {
        ...fsPromises,
        open: async (...args: Parameters<typeof fsPromises.open>) => wrap(await fsPromises.open(...args)),
      },
    },
  );
  return downloadVerified;
}

t.test('disk full reported only by fsync names the .part and keeps it', async (t) => {
  const mirror = await startMirror(t, ['x86_64']);
  const dest = tempDir(t, 'rackboot-fetch-');
  // Delayed allocation (ext4, XFS, NFS) accepts the writes and fails the fsync; tmpfs cannot show that.
  const downloadVerified = await downloadThrough(t, (handle) => ({
    write: (chunk: Uint8Array) => handle.write(chunk),
    sync: () =>
      Promise.reject(Object.assign(new Error('ENOSPC: no space left on device, fsync'), { code: 'ENOSPC' })),
    close: () => handle.close(),
  }));
  const kernelPath = mirror.locations.x86_64?.kernel ?? '';
  const content = mirror.files.get(kernelPath)?.content ?? Buffer.alloc(0);
  const file = join(dest, 'kernel');
  await t.rejects(
    downloadVerified({
      url: mirror.base + kernelPath,
      file,
      sha256: createHash('sha256').update(content).digest('hex'),
    }),
    new RegExp(
      `disk full writing ${file}\\.part after ${SIZES.kernel} bytes; free space and run again to resume`,
    ),
  );
  t.equal(statSync(`${file}.part`).size, SIZES.kernel, 'the .part is kept');
  t.notOk(existsSync(file));
});

t.test('a write that takes only part of a chunk is completed, never verified with a hole', async (t) => {
  // A nearly full disk: write(2) takes what fits and says so, without an error. Before, the rest of
  // the chunk was dropped while the digest, over the bytes received, still matched.
  const mirror = await startMirror(t, ['x86_64']);
  const dest = tempDir(t, 'rackboot-fetch-');
  let shortWrites = 0;
  const downloadVerified = await downloadThrough(t, (handle) => ({
    write: (chunk: Uint8Array, offset = 0, length = chunk.length - offset) => {
      const taken = length > 1 && shortWrites < 3 ? Math.floor(length / 2) : length;
      if (taken < length) shortWrites += 1;
      return handle.write(chunk, offset, taken);
    },
    sync: () => handle.sync(),
    stat: () => handle.stat(),
    close: () => handle.close(),
  }));
  const kernelPath = mirror.locations.x86_64?.kernel ?? '';
  const content = mirror.files.get(kernelPath)?.content ?? Buffer.alloc(0);
  const file = join(dest, 'kernel');
  await downloadVerified({
    url: mirror.base + kernelPath,
    file,
    sha256: createHash('sha256').update(content).digest('hex'),
  });
  t.equal(shortWrites, 3, 'the disk took part of three writes');
  t.ok(readFileSync(file).equals(content), 'the file is whole');
});

/** A throwaway signing key in its own GNUPGHOME; `keyring` is its armored public key, as fedora.gpg is. */
async function signingKey(t: Test, name: string) {
  const gnupgHome = tempDir(t, 'rackboot-gnupg-');
  const env = { ...process.env, GNUPGHOME: gnupgHome };
  t.teardown(() => run('gpgconf', ['--kill', 'all'], { env }).catch(() => undefined));
  const userId = `${name} <${name}@example.invalid>`;
  await run('gpg', ['--batch', '--passphrase', '', '--quick-gen-key', userId, 'ed25519', 'sign', 'never'], {
    env,
  });
  const keyring = join(gnupgHome, 'signing-key.asc');
  writeFileSync(keyring, (await run('gpg', ['--batch', '--armor', '--export'], { env })).stdout);
  const sign = async (content: Buffer) => {
    const input = join(gnupgHome, 'to-sign');
    writeFileSync(input, content);
    await run('gpg', ['--batch', '--yes', '--detach-sign', '-o', `${input}.sig`, input], { env });
    return readFileSync(`${input}.sig`);
  };
  return { gnupgHome, keyring, sign };
}

async function signAll(
  mirror: Awaited<ReturnType<typeof startMirror>>,
  sign: (content: Buffer) => Promise<Buffer>,
) {
  for (const path of Object.values(mirror.locations.x86_64 ?? {})) {
    const served = mirror.files.get(path);
    if (served) served.signature = await sign(served.content);
  }
}

t.test('GPG: a good signature passes, a bad one removes the file', async (t) => {
  const { gnupgHome, keyring, sign } = await signingKey(t, 'rackboot-test');
  const mirror = await startMirror(t, ['x86_64']);
  await signAll(mirror, sign);
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

t.test('GPG: an installed file whose re-check fails stays, and so does the manifest', async (t) => {
  const release = await signingKey(t, 'release-key');
  const other = await signingKey(t, 'other-key');
  const mirror = await startMirror(t, ['x86_64']);
  await signAll(mirror, release.sign);
  const dest = tempDir(t, 'rackboot-fetch-');
  await fetchCoreos(options(mirror, dest, { keyring: release.keyring }));
  const manifestFile = join(dest, MANIFEST_PATH);
  const manifest = readFileSync(manifestFile, 'utf8');
  const before = listFiles(dest);
  const kernel = join(dest, 'fedora-coreos/stable/x86_64', basename(mirror.locations.x86_64?.kernel ?? ''));

  // A keyring that is outdated or wrong: the files are as good as before, the keyring is not.
  await t.rejects(
    fetchCoreos(options(mirror, dest, { keyring: other.keyring })),
    /signature check of .*live-kernel\.x86_64 failed \(keyring .*\): .*; .*live-kernel\.x86_64 was installed by an earlier run and is left in place/,
  );
  t.same(
    listFiles(dest).filter((name) => !name.endsWith('.sig')),
    before.filter((name) => !name.endsWith('.sig')),
    'every artifact is still there',
  );
  t.equal(readFileSync(manifestFile, 'utf8'), manifest, 'the manifest is untouched');
  t.notOk(existsSync(`${kernel}.sig`), 'the .sig that failed is dropped, to be fetched again');

  // A damaged kept signature: the next run with the right keyring fetches it again and passes.
  await fetchCoreos(options(mirror, dest, { keyring: release.keyring }));
  writeFileSync(`${kernel}.sig`, 'damaged');
  await t.rejects(
    fetchCoreos(options(mirror, dest, { keyring: release.keyring })),
    /signature check of .*live-kernel\.x86_64 failed.*left in place/,
  );
  t.ok(existsSync(kernel), 'the kernel is still there');
  const repaired = options(mirror, dest, { keyring: release.keyring });
  await fetchCoreos(repaired);
  t.match(repaired.output.join(''), /x86_64 kernel: already present, .* sha256 and signature verified/);
  t.same(listFiles(dest), before, 'files and signatures as after the first fetch');
  t.equal(
    mirror.artifactRequests().filter((entry) => !entry.path.endsWith('.sig')).length,
    3,
    'no artifact fetched twice',
  );
});

/** `rackboot fetch coreos` from the sources, against the test mirror's stream metadata. */
function fetchCoreosCli(mirror: { base: string }, args: string[], env: NodeJS.ProcessEnv = process.env) {
  return run(
    process.execPath,
    [
      '--import',
      'tsx',
      'src/cli/main.ts',
      'fetch',
      'coreos',
      '--metadata-url',
      `${mirror.base}/streams/stable.json`,
      ...args,
    ],
    { cwd: join(import.meta.dirname, '..'), env },
  );
}

t.test('an empty keyring is refused, never read as "no signature check"', async (t) => {
  const mirror = await startMirror(t, ['x86_64']);
  const dest = tempDir(t, 'rackboot-fetch-');
  await t.rejects(fetchCoreos(options(mirror, dest, { keyring: '' })), /cannot read keyring/);
  const cli = (args: string[], env: NodeJS.ProcessEnv = process.env) =>
    fetchCoreosCli(mirror, ['--dest', dest, ...args], env).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => error,
    );
  const flag = await cli(['--keyring', '']);
  t.equal(flag.code, 1);
  t.match(flag.stderr, 'rackboot: --keyring is empty; name a keyring file');
  const variable = await cli([], { ...process.env, RACKBOOT_FETCH_KEYRING: '' });
  t.equal(variable.code, 1);
  t.match(variable.stderr, 'rackboot: RACKBOOT_FETCH_KEYRING is empty; name a keyring file');
  t.equal(mirror.artifactRequests().length, 0, 'nothing downloaded');
});

t.test(
  'the CLI refuses an --arch that names nothing and a --retries that is no whole number; it warns of plain-HTTP metadata without a keyring',
  async (t) => {
    const mirror = await startMirror(t, ['x86_64']);
    const dest = tempDir(t, 'rackboot-fetch-');
    const cli = (args: string[]) =>
      fetchCoreosCli(mirror, ['--dest', dest, ...args]).then(
        ({ stderr }) => ({ code: 0, stderr }),
        (error: { code: number; stderr: string }) => error,
      );
    // `--arch "$ARCHES"` with the variable unset, or a stray comma: it used to fetch nothing and exit 0.
    for (const arch of [',', '']) {
      const refused = await cli(['--arch', arch]);
      t.equal(refused.code, 1, `--arch ${JSON.stringify(arch)}`);
      t.match(refused.stderr, 'rackboot: --arch names no architecture');
    }
    // `--retries "$RETRIES"` with the variable unset read as 0: no retry at all, without a word.
    for (const retries of ['', ' ']) {
      const refused = await cli(['--retries', retries]);
      t.equal(refused.code, 1, `--retries ${JSON.stringify(retries)}`);
      t.match(refused.stderr, 'rackboot: --retries wants a whole number');
    }
    t.equal(mirror.artifactRequests().length, 0, 'nothing downloaded');
    const fetched = await cli([]);
    t.equal(fetched.code, 0);
    t.match(
      fetched.stderr,
      `rackboot fetch: warning: ${mirror.base}/streams/stable.json is plain HTTP and no --keyring is given`,
    );
  },
);

t.test('the CLI fetches into server.assets of the config and prints where the manifest is', async (t) => {
  const mirror = await startMirror(t, ['x86_64']);
  const directory = tempDir(t, 'rackboot-fetch-');
  const config = join(directory, 'rackboot.yaml');
  writeFileSync(config, 'server:\n  address: 10.77.0.1\n  assets: served-here\n');
  const { stdout } = await fetchCoreosCli(mirror, ['-c', config]);
  const dest = join(directory, 'served-here');
  t.match(stdout, `destination: ${dest} (server.assets of ${config})`);
  t.match(stdout, `manifest: ${join(dest, MANIFEST_PATH)}`);
  t.ok(existsSync(join(dest, MANIFEST_PATH)));
});

t.test(
  'a config named by -c or $RACKBOOT_CONFIG that does not exist is an error, not ./boot-assets',
  async (t) => {
    const mirror = await startMirror(t, ['x86_64']);
    // The working directory has no rackboot.yaml: only then may the fetch fall back to ./boot-assets.
    const directory = t.testdir({});
    const missing = join(directory, 'rackbot.yaml');
    const metadata = ['--metadata-url', `${mirror.base}/streams/stable.json`];
    for (const [how, args, env] of [
      ['-c', ['-c', missing], { RACKBOOT_CONFIG: '' }],
      ['$RACKBOOT_CONFIG', [], { RACKBOOT_CONFIG: missing }],
    ] as const) {
      const refused = await runCli(['fetch', 'coreos', ...metadata, ...args], { cwd: directory, env });
      t.equal(refused.code, 1, `${how}: exit 1`);
      t.match(refused.stderr, `rackboot: ${missing} does not exist`, `${how}: names the file`);
    }
    t.equal(mirror.artifactRequests().length, 0, 'nothing downloaded');
    t.same(listFiles(directory), [], 'no boot-assets made in the working directory');
  },
);

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
        bootsFromDisk: false,
      };
      const vars = {
        mac: machine.mac,
        hostname: 'node1',
        ip: '',
        profile: 'fcos',
        base_url: baseUrl,
        ignition_url: `${baseUrl}/ignition/${machine.mac}`,
        installer_ignition_url: `${baseUrl}/ignition/installer/${machine.mac}`,
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
  const lockDirectory = join(dest, LOCK_PATH);
  mkdirSync(lockDirectory, { recursive: true });
  // A live holder: another process (this one's own PID would be an earlier process's entry).
  const holder = spawn('sleep', ['60']);
  t.teardown(() => holder.kill());
  writeFileSync(join(lockDirectory, '1'), `${holder.pid}\n`);
  await t.rejects(
    fetchCoreos(options(mirror, dest)),
    new RegExp(
      `another fetch \\(pid ${holder.pid}\\) is writing here; wait for it or remove ${lockDirectory}`,
    ),
  );
  t.equal(mirror.artifactRequests().length, 0);

  const exited = spawn('true');
  await new Promise((resolve) => exited.on('exit', resolve));
  writeFileSync(join(lockDirectory, '2'), `${exited.pid}\n`);
  await fetchCoreos(options(mirror, dest));
  t.ok(existsSync(join(dest, MANIFEST_PATH)), 'the fetch ran');
  t.same(readdirSync(lockDirectory), ['4'], 'only the newest lock entry is left');
  t.equal(readFileSync(join(lockDirectory, '4'), 'utf8'), 'released');
  await fetchCoreos(options(mirror, dest));
  t.same(readdirSync(lockDirectory), ['6'], 'a released lock is taken at once');
});

t.test('a lock entry without a PID counts as held for a minute, then is taken over', async (t) => {
  const dest = tempDir(t, 'rackboot-lock-');
  const lockDirectory = join(dest, LOCK_PATH);
  mkdirSync(lockDirectory, { recursive: true });
  // What a machine crash can leave behind: the entry's name, not its content.
  writeFileSync(join(lockDirectory, '1'), '');
  await t.rejects(
    withLock(lockDirectory, async () => undefined),
    /1 names no fetch; it counts as held until it is 60 s old; wait for it or remove/,
  );
  const old = new Date(Date.now() - 61_000);
  utimesSync(join(lockDirectory, '1'), old, old);
  t.equal(await withLock(lockDirectory, async () => 'ran'), 'ran');
});

t.test(
  "an entry naming this PID that this process does not hold is an earlier process's, taken over",
  async (t) => {
    const lockDirectory = join(tempDir(t, 'rackboot-lock-'), LOCK_PATH);
    mkdirSync(lockDirectory, { recursive: true });
    // A server killed mid-adopt and restarted with the same PID (PID 1 in a container) finds this.
    writeFileSync(join(lockDirectory, '7'), `${process.pid}\n`);
    writeFileSync(join(lockDirectory, `draft-${process.pid}-0123456789ab`), `${process.pid}\n`);
    t.equal(await withLock(lockDirectory, async () => 'ran'), 'ran');
    t.same(readdirSync(lockDirectory), ['9'], 'only the released state is left');
    t.equal(readFileSync(join(lockDirectory, '9'), 'utf8'), 'released');
    // While this process holds it, its own PID is a live holder.
    await withLock(lockDirectory, async () => {
      await t.rejects(
        withLock(lockDirectory, async () => undefined),
        /another fetch \(pid \d+\) is writing here/,
      );
    });
  },
);

t.test('runs started at the same instant never hold the lock together', async (t) => {
  const work = tempDir(t, 'rackboot-lock-race-');
  const lockModule = join(import.meta.dirname, '..', 'src', 'fetch', 'lock.ts');
  const ROUNDS = 6;
  const WORKERS = 4;
  const rounds = Array.from({ length: ROUNDS }, (_, round) => join(work, `round-${round}`, LOCK_PATH));
  // Every other round starts from the lock of a run that was SIGKILLed while holding it.
  const staleRounds = rounds.filter((_, round) => round % 2 === 1);
  const killedHolder = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      `import { withLock } from ${JSON.stringify(lockModule)};
       const hold = (dirs) => dirs.length === 0 ? process.kill(process.pid, 'SIGKILL') : withLock(dirs[0], () => hold(dirs.slice(1)));
       await hold(process.argv.slice(1));`,
      ...staleRounds,
    ],
    { stdio: 'inherit' },
  );
  t.equal((await once(killedHolder, 'exit'))[1], 'SIGKILL', 'the holder of the stale locks was killed');

  const startAt = Date.now() + 3000;
  const worker = `
    import { appendFileSync } from 'node:fs';
    import { setTimeout as sleep } from 'node:timers/promises';
    import { withLock } from ${JSON.stringify(lockModule)};
    const [startAt, ...rounds] = process.argv.slice(1);
    for (const [index, lock] of rounds.entries()) {
      while (Date.now() < Number(startAt) + index * 500) {} // all workers leave this loop together
      const log = (line) => appendFileSync(lock + '.log', line + ' ' + process.pid + '\\n');
      await withLock(lock, async () => {
        log('in');
        await sleep(100);
        log('out');
      }).catch(() => log('refused'));
    }`;
  const workers = Array.from({ length: WORKERS }, () =>
    spawn(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', worker, String(startAt), ...rounds],
      { stdio: 'inherit' },
    ),
  );
  await Promise.all(workers.map((child) => once(child, 'exit')));

  for (const [round, lock] of rounds.entries()) {
    const lines = readFileSync(`${lock}.log`, 'utf8').trim().split('\n');
    const count = (word: string) => lines.filter((line) => line.startsWith(`${word} `)).length;
    let holders = 0;
    let mostAtOnce = 0;
    for (const line of lines) {
      holders += line.startsWith('in ') ? 1 : line.startsWith('out ') ? -1 : 0;
      mostAtOnce = Math.max(mostAtOnce, holders);
    }
    const name = `round ${round}${staleRounds.includes(lock) ? ' (after a killed holder)' : ''}`;
    t.equal(mostAtOnce, 1, `${name}: one holder at a time`);
    t.equal(count('in') + count('refused'), WORKERS, `${name}: every run held the lock or was refused`);
  }
});
