import { chmodSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import t, { type Test } from 'tap';
import {
  emptyManifest,
  formatManifest,
  MANIFEST_PATH,
  type Manifest,
  type ManifestEntry,
} from '../src/fetch/manifest.js';
import { missingAssets, profileAssets } from '../src/inventory/profile-assets.js';
import type { ProfileConfig } from '../src/inventory/schema.js';

function assetsRoot(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'rackboot-assets-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function entry(arch: string, release: string): ManifestEntry {
  const file = (name: string) => ({
    path: `fedora-coreos/stable/${arch}/fedora-coreos-${release}-live-${name}.${arch}`,
    sha256: '0'.repeat(64),
    url: `https://example.invalid/${name}`,
  });
  return {
    release,
    metadata_url: 'https://builds.coreos.fedoraproject.org/streams/stable.json',
    fetched_at: '2026-11-25T00:00:00.000Z',
    kernel: file('kernel'),
    initramfs: file('initramfs'),
    rootfs: file('rootfs'),
  };
}

/** Writes the manifest the way fetch does (temp + rename), so the reader sees a new inode. */
function writeManifest(root: string, manifest: Manifest, createFiles = true): void {
  const file = join(root, MANIFEST_PATH);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(`${file}.tmp`, formatManifest(manifest));
  renameSync(`${file}.tmp`, file);
  if (!createFiles) return;
  for (const arches of Object.values(manifest.streams)) {
    for (const value of Object.values(arches ?? {})) {
      for (const artifact of [value.kernel, value.initramfs, value.rootfs]) {
        mkdirSync(dirname(join(root, artifact.path)), { recursive: true });
        writeFileSync(join(root, artifact.path), 'x');
      }
    }
  }
}

const streamProfile: ProfileConfig = { kind: 'coreos-install', coreos: { stream: 'stable' }, args: [] };

t.test('explicit paths win, per-arch overrides win over them, field by field', async (t) => {
  const profile: ProfileConfig = {
    kind: 'coreos-install',
    kernel: 'fcos/kernel',
    initrd: ['fcos/initramfs.img'],
    rootfs: 'http://mirror.example/rootfs.img',
    arch: { aarch64: { kernel: 'fcos-arm/kernel' } },
    args: [],
  };
  const root = assetsRoot(t);
  t.same(profileAssets(profile, 'x86_64', root), {
    kernel: 'fcos/kernel',
    initrd: ['fcos/initramfs.img'],
    rootfs: 'http://mirror.example/rootfs.img',
  });
  t.same(profileAssets(profile, 'aarch64', root), {
    kernel: 'fcos-arm/kernel',
    initrd: ['fcos/initramfs.img'],
    rootfs: 'http://mirror.example/rootfs.img',
  });
});

t.test('BIOS iPXE reports i386: it gets the x86_64 assets unless i386 is named', async (t) => {
  const root = assetsRoot(t);
  writeManifest(root, { ...emptyManifest(), streams: { stable: { x86_64: entry('x86_64', '43.1.3.0') } } });
  t.same(profileAssets(streamProfile, 'i386', root), profileAssets(streamProfile, 'x86_64', root));
  t.match(profileAssets(streamProfile, 'unknown', root), { kernel: /x86_64/ });
  const withI386: ProfileConfig = { ...streamProfile, arch: { i386: { kernel: 'special/kernel' } } };
  t.match(profileAssets(withI386, 'i386', root), { kernel: 'special/kernel', initrd: [/x86_64/] });
});

t.test('a stream resolves per arch from the manifest, and a new fetch is seen without restart', async (t) => {
  const root = assetsRoot(t);
  writeManifest(root, {
    ...emptyManifest(),
    streams: { stable: { x86_64: entry('x86_64', '43.1.3.0'), aarch64: entry('aarch64', '43.1.3.0') } },
  });
  t.same(profileAssets(streamProfile, 'aarch64', root), {
    kernel: 'fedora-coreos/stable/aarch64/fedora-coreos-43.1.3.0-live-kernel.aarch64',
    initrd: ['fedora-coreos/stable/aarch64/fedora-coreos-43.1.3.0-live-initramfs.aarch64'],
    rootfs: 'fedora-coreos/stable/aarch64/fedora-coreos-43.1.3.0-live-rootfs.aarch64',
  });
  writeManifest(root, { ...emptyManifest(), streams: { stable: { x86_64: entry('x86_64', '43.2.3.0') } } });
  t.match(profileAssets(streamProfile, 'x86_64', root), { kernel: /43\.2\.3\.0-live-kernel/ });
  t.same(profileAssets(streamProfile, 'aarch64', root), {
    error:
      `profile names stream stable but ${join(root, MANIFEST_PATH)} has no aarch64 entry; ` +
      'run rackboot fetch coreos --stream stable --arch aarch64',
  });
});

t.test('errors name the missing piece and the command that fixes it', async (t) => {
  const root = assetsRoot(t);
  t.same(profileAssets(streamProfile, 'x86_64', root), {
    error:
      `profile names stream stable but ${join(root, MANIFEST_PATH)} does not exist; ` +
      'run rackboot fetch coreos --stream stable --arch x86_64',
  });
  mkdirSync(join(root, 'fedora-coreos'));
  writeFileSync(
    join(root, MANIFEST_PATH),
    '{"format": 1, "streams": {"stable": {"x86_64": {"release": "1"}}}}',
  );
  t.match(profileAssets(streamProfile, 'x86_64', root), {
    error: /manifest\.json is unreadable: streams\.stable\.x86_64: metadata_url is missing/,
  });
  writeFileSync(
    join(root, MANIFEST_PATH),
    formatManifest({
      ...emptyManifest(),
      streams: {
        stable: {
          x86_64: { ...entry('x86_64', '1'), kernel: { path: '../../etc/passwd', sha256: '', url: '' } },
        },
      },
    }),
  );
  t.match(profileAssets(streamProfile, 'x86_64', root), {
    error: /kernel\.path must stay under the assets root/,
  });
  t.same(profileAssets({ kind: 'linux', args: [] }, 'aarch64', root), {
    error: 'no kernel for aarch64: set kernel, arch.aarch64.kernel, or coreos.stream',
  });
  t.same(profileAssets({ kind: 'coreos-install', kernel: 'k', args: [] }, 'x86_64', root), {
    error: 'no initramfs for x86_64: set initrd, arch.x86_64.initrd, or coreos.stream',
  });
  t.same(profileAssets({ kind: 'linux', kernel: 'vmlinuz', args: [] }, 'x86_64', root), {
    kernel: 'vmlinuz',
    initrd: [],
    rootfs: undefined,
  });
});

t.test('missingAssets lists absent local files by profile key, never URLs', async (t) => {
  const root = assetsRoot(t);
  writeFileSync(join(root, 'vmlinuz'), 'x');
  const profile: ProfileConfig = {
    kind: 'linux',
    kernel: 'vmlinuz',
    initrd: ['present.img', 'absent.img', 'https://mirror.example/remote.img'],
    arch: { aarch64: { kernel: 'arm/vmlinuz', rootfs: '../outside.img' } },
    args: [],
  };
  writeFileSync(join(root, 'present.img'), 'x');
  t.same(missingAssets(profile, root), [
    { field: 'initrd.1', path: join(root, 'absent.img'), message: `absent.img not found under ${root}` },
    {
      field: 'arch.aarch64.kernel',
      path: join(root, 'arm/vmlinuz'),
      message: `arm/vmlinuz not found under ${root}`,
    },
    {
      field: 'arch.aarch64.rootfs',
      path: join(root, '../outside.img'),
      message: `../outside.img is outside the assets directory ${root}`,
    },
  ]);
});

t.test('missingAssets for a stream: the manifest, then each file it lists', async (t) => {
  const root = assetsRoot(t);
  t.same(missingAssets(streamProfile, root), [
    {
      field: 'coreos.stream',
      path: join(root, MANIFEST_PATH),
      message: `${join(root, MANIFEST_PATH)} does not exist; run rackboot fetch coreos --stream stable`,
    },
  ]);
  writeManifest(root, { ...emptyManifest(), streams: { testing: { x86_64: entry('x86_64', '43.1.2.0') } } });
  t.match(missingAssets(streamProfile, root), [
    { field: 'coreos.stream', message: /has no entry for stream stable/ },
  ]);
  writeManifest(root, { ...emptyManifest(), streams: { stable: { x86_64: entry('x86_64', '43.1.3.0') } } });
  t.same(missingAssets(streamProfile, root), [], 'all listed files present');
  const rootfs = entry('x86_64', '43.1.3.0').rootfs.path;
  rmSync(join(root, rootfs));
  t.same(missingAssets(streamProfile, root), [
    {
      field: 'coreos.stream',
      path: join(root, rootfs),
      message: `${join(root, rootfs)} (stream stable, x86_64, release 43.1.3.0) is missing; run rackboot fetch coreos --stream stable --arch x86_64`,
    },
  ]);
  const explicit: ProfileConfig = { ...streamProfile, kernel: 'k', initrd: ['i'], rootfs: 'r' };
  t.same(
    missingAssets(explicit, root).map((missing) => missing.field),
    ['kernel', 'initrd.0', 'rootfs'],
    'a stream that supplies nothing is not checked',
  );
});

t.test(
  'missingAssets lists a boot file this user cannot read: every machine would be refused it',
  { skip: process.getuid?.() === 0 ? false : 'needs root: reads as nobody to make a file unreadable' },
  async (t) => {
    const NOBODY = 65534;
    const root = assetsRoot(t);
    chmodSync(root, 0o755);
    // A kernel left 0600 by a fetch or a copy run as root, and rackboot running as its service user.
    writeFileSync(join(root, 'vmlinuz'), 'x', { mode: 0o600 });
    writeManifest(root, { ...emptyManifest(), streams: { stable: { x86_64: entry('x86_64', '43.1.3.0') } } });
    const rootfs = join(root, entry('x86_64', '43.1.3.0').rootfs.path);
    chmodSync(rootfs, 0o600);
    process.seteuid?.(NOBODY);
    let missing: ReturnType<typeof missingAssets>;
    try {
      missing = missingAssets(
        { kind: 'coreos-install', coreos: { stream: 'stable' }, kernel: 'vmlinuz', args: [] },
        root,
      );
    } finally {
      process.seteuid?.(0);
    }
    t.same(missing, [
      {
        field: 'kernel',
        path: join(root, 'vmlinuz'),
        message: `vmlinuz under ${root} cannot be read by this user: make it readable by the user rackboot runs as (chmod a+r)`,
      },
      {
        field: 'coreos.stream',
        path: rootfs,
        message: `${rootfs} (stream stable, x86_64, release 43.1.3.0) cannot be read by this user: make it readable by the user rackboot runs as (chmod a+r)`,
      },
    ]);
  },
);
