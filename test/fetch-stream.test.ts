import t from 'tap';
import { artifactPath, pickPxeRelease, streamMetadataUrl } from '../src/fetch/stream.js';

const BUILD = 'https://builds.coreos.fedoraproject.org/prod/streams/stable/builds/33.20201201.3.0/x86_64';
const sha = (digit: string) => digit.repeat(64);
const file = (name: string, digit: string) => ({
  location: `${BUILD}/${name}`,
  signature: `${BUILD}/${name}.sig`,
  sha256: sha(digit),
});

/** The shape of the official document (stream-metadata-go fixtures/fcos-stream.json), cut down. */
function document(pxe: Record<string, unknown> | undefined) {
  return {
    stream: 'stable',
    metadata: { 'last-modified': '2020-12-17T14:18:43Z', generator: 'fedora-coreos-stream-generator v0' },
    architectures: {
      x86_64: {
        artifacts: {
          aws: { release: '33.20201201.3.0', formats: { 'vmdk.xz': { disk: file('aws.vmdk.xz', 'a') } } },
          metal: {
            release: '33.20201201.3.0',
            formats: {
              iso: { disk: file('fedora-coreos-33.20201201.3.0-live.x86_64.iso', 'b') },
              ...(pxe ? { pxe } : {}),
            },
          },
        },
        images: { aws: { regions: { 'us-east-1': { release: '33.20201201.3.0', image: 'ami-0' } } } },
      },
      s390x: { artifacts: { metal: { release: '33.20201201.3.0', formats: {} } } },
    },
  };
}

const oldNames = {
  kernel: file('fedora-coreos-33.20201201.3.0-live-kernel-x86_64', '1'),
  initramfs: file('fedora-coreos-33.20201201.3.0-live-initramfs.x86_64.img', '2'),
  rootfs: file('fedora-coreos-33.20201201.3.0-live-rootfs.x86_64.img', '3'),
};

t.test('picks the metal PXE set of one architecture, names as published', async (t) => {
  t.same(pickPxeRelease(document(oldNames), 'stable', 'x86_64', 'stable.json'), {
    release: '33.20201201.3.0',
    files: {
      kernel: { ...oldNames.kernel, fileName: 'fedora-coreos-33.20201201.3.0-live-kernel-x86_64' },
      initramfs: {
        ...oldNames.initramfs,
        fileName: 'fedora-coreos-33.20201201.3.0-live-initramfs.x86_64.img',
      },
      rootfs: { ...oldNames.rootfs, fileName: 'fedora-coreos-33.20201201.3.0-live-rootfs.x86_64.img' },
    },
  });
  t.equal(streamMetadataUrl('next'), 'https://builds.coreos.fedoraproject.org/streams/next.json');
  t.equal(artifactPath('stable', 'aarch64', 'k'), 'fedora-coreos/stable/aarch64/k');
});

t.test('refuses what it cannot use, saying what is wrong', async (t) => {
  const pick = (metadata: unknown, arch = 'x86_64') =>
    pickPxeRelease(metadata, 'stable', arch, 'stable.json');
  t.same(pick(document(oldNames), 's390x'), {
    error: 'the stable stream has no metal PXE artifacts for s390x',
  });
  t.same(pick(document(oldNames), 'amd64'), {
    error: 'unknown architecture amd64 (did you mean x86_64?); the stable stream has s390x, x86_64',
  });
  t.same(pick({ stream: 'stable' }), {
    error: 'stable.json is not Fedora CoreOS stream metadata (no "architectures")',
  });
  t.same(pick(document({ ...oldNames, rootfs: { location: `${BUILD}/r` } })), {
    error: 'stable.json: x86_64 metal pxe rootfs lacks location or sha256',
  });
  t.same(pick(document({ ...oldNames, kernel: { ...oldNames.kernel, sha256: 'abc' } })), {
    error: 'stable.json: x86_64 metal pxe kernel has a malformed sha256',
  });
  for (const location of [
    `${BUILD}/`,
    'https://example.invalid/a/%2e%2e',
    'https://example.invalid/x%2Fy',
    'not a url',
  ]) {
    t.match(
      pick(document({ ...oldNames, initramfs: { ...oldNames.initramfs, location } })),
      { error: /initramfs location .* has no usable file name/ },
      location,
    );
  }
});
