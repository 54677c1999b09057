/**
 * Evidence for the codec decision (docs/dhcp.md): the `dhcp` npm package's parser versus ours on
 * the same inputs. The package is not a dependency; install it aside and point at it:
 *   mkdir -p /tmp/dhcp-eval && (cd /tmp/dhcp-eval && npm init -y >/dev/null && npm install dhcp@0.2.20)
 *   node --import tsx bench/dhcp/codec-eval.ts [/tmp/dhcp-eval/node_modules/dhcp]
 * Checks: PAD handling, option overload, non-Ethernet htype, the fuzz corpus of the test suite, and
 * decode throughput of a real-firmware DISCOVER.
 */
import { createRequire } from 'node:module';
import type { Mac } from '../../src/boot-plan.js';
import { decodeDhcpPacket } from '../../src/dhcp/packet.js';
import { FIRMWARE, requestBytes } from '../../test/dhcp/fixtures.js';
import { mutatePacket, seededRandom } from '../../test/dhcp/mutate.js';

interface DhcpPackage {
  addOption(code: number, option: { name: string; type: string; attr?: string }): void;
}
interface DhcpProtocol {
  parse(bytes: Buffer): { options: Record<number, unknown>; chaddr: string };
}

const packageDirectory = process.argv[2] ?? '/tmp/dhcp-eval/node_modules/dhcp';
const require = createRequire(import.meta.url);
const dhcpPackage = require(packageDirectory) as DhcpPackage;
const protocol = require(`${packageDirectory}/lib/protocol.js`) as DhcpProtocol;
// Register what PXE needs and the package lacks, as the issue asks.
for (const [code, name, type] of [
  [77, 'User class', 'ASCII'],
  [93, 'Client system architecture', 'UInt16s'],
  [94, 'Client network interface', 'UInt8s'],
  [97, 'Client machine id', 'UInt8s'],
  [175, 'iPXE encapsulated', 'UInt8s'],
] as const) {
  dhcpPackage.addOption(code, { name, type, attr: name });
}
// The package logs every unknown option with console.error; count instead of printing.
let unknownOptionLogs = 0;
console.error = () => {
  unknownOptionLogs += 1;
};

const mac = '52:54:00:aa:bb:cc' as Mac;
const discover = requestBytes({ type: 'discover', mac, options: FIRMWARE.uefiPxe(7) });
const header = discover.subarray(0, 240);
const report = (name: string, value: string) => process.stdout.write(`${name.padEnd(44)} ${value}\n`);

const tryParse = (bytes: Buffer) => {
  try {
    return { ok: true as const, value: protocol.parse(bytes) };
  } catch (error) {
    return { ok: false as const, error: (error as Error).message };
  }
};

// 1. One PAD before an option: option 60 = "PXEC" (two PADs hide the bug: it skips the second).
const padded = Buffer.concat([header, Buffer.from([53, 1, 1, 0, 60, 4, 0x50, 0x58, 0x45, 0x43, 255])]);
const padPackage = tryParse(padded);
const padOurs = decodeDhcpPacket(padded);
report(
  'one PAD, then option 60 "PXEC"',
  `dhcp: ${padPackage.ok ? JSON.stringify(padPackage.value.options[60] ?? null) : `throws (${padPackage.error})`}; ` +
    `ours: ${padOurs.ok ? JSON.stringify(padOurs.packet.options.get(60)?.toString()) : padOurs.reason}`,
);

// 2. Option overload: vendor class carried in `file`.
const overloaded = Buffer.concat([header, Buffer.from([53, 1, 1, 52, 1, 1, 255])]);
Buffer.from([60, 9, ...Buffer.from('PXEClient'), 255]).copy(overloaded, 108);
const overloadPackage = tryParse(overloaded);
const overloadOurs = decodeDhcpPacket(overloaded);
report(
  'overload (52=1), option 60 inside file',
  `dhcp: ${overloadPackage.ok ? JSON.stringify(overloadPackage.value.options[60] ?? null) : 'throws'}; ` +
    `ours: ${overloadOurs.ok ? JSON.stringify(overloadOurs.packet.options.get(60)?.toString()) : overloadOurs.reason}`,
);

// 3. InfiniBand (htype 32, hlen 0).
const infiniband = Buffer.from(discover);
infiniband[1] = 32;
infiniband[2] = 0;
const ibPackage = tryParse(infiniband);
report(
  'htype 32 (InfiniBand)',
  `dhcp: ${ibPackage.ok ? 'parsed' : `throws (${ibPackage.error})`}; ours: ${decodeDhcpPacket(infiniband).ok ? 'parsed' : 'refused'}`,
);

// 4. The fuzz corpus of test/dhcp-fuzz.test.ts.
const random = seededRandom(0x5eed);
let packageThrows = 0;
let packageAccepted = 0;
let oursRefused = 0;
let acceptedButRefusedByUs = 0;
const FUZZ = 100_000;
for (let index = 0; index < FUZZ; index += 1) {
  const bytes = mutatePacket(discover, random);
  const ours = decodeDhcpPacket(bytes);
  if (!ours.ok) oursRefused += 1;
  const parsed = tryParse(bytes);
  if (!parsed.ok) packageThrows += 1;
  else {
    packageAccepted += 1;
    if (!ours.ok) acceptedButRefusedByUs += 1;
  }
}
report(
  `fuzz corpus (${FUZZ} mutants)`,
  `dhcp: ${packageThrows} exceptions, ${packageAccepted} accepted of which ${acceptedButRefusedByUs} are malformed ` +
    `(overruns, bad cookie, ...); ${unknownOptionLogs} console.error lines; ours: ${oursRefused} refused with a reason, 0 exceptions`,
);

// 5. Throughput on a valid OVMF DISCOVER.
const timeDecode = (decode: () => unknown) => {
  for (let index = 0; index < 20_000; index += 1) decode();
  const started = performance.now();
  const rounds = 200_000;
  for (let index = 0; index < rounds; index += 1) decode();
  return (rounds / (performance.now() - started)) * 1000;
};
const packageRate = timeDecode(() => protocol.parse(discover));
const ourRate = timeDecode(() => decodeDhcpPacket(discover));
report(
  'decode rate, OVMF DISCOVER',
  `dhcp: ${(packageRate / 1000).toFixed(0)}k/s; ours: ${(ourRate / 1000).toFixed(0)}k/s (${(ourRate / packageRate).toFixed(1)}x)`,
);
