import t from 'tap';
import type { Mac } from '../src/boot-plan.js';
import { type DecideContext, decide, type Outcome } from '../src/dhcp/decide.js';
import { LeaseTable } from '../src/dhcp/leases.js';
import { Option, readAddress, readText, readUint32 } from '../src/dhcp/options.js';
import {
  BROADCAST_FLAG,
  type DhcpPacket,
  type DhcpRequest,
  decodeDhcpRequest,
  encodeDhcpPacket,
} from '../src/dhcp/packet.js';
import { settingsFor } from '../src/dhcp/settings.js';
import { EXHAUSTION_WARNING_INTERVAL_MS, operatorWarnings } from '../src/dhcp/warnings.js';
import type { Config } from '../src/inventory/schema.js';
import { ipToNumber } from '../src/ipv4.js';
import { step } from '../src/lifecycle/states.js';
import {
  FIRMWARE,
  INSTALLED_MAC,
  LISTED_MAC,
  loadTestConfig,
  type RequestSpec,
  requestBytes,
  testDecision,
  UNLISTED_MAC,
} from './dhcp/fixtures.js';

const SERVER = '10.77.5.1';
const BASE = `http://${SERVER}:8080`;
const NOW = Date.UTC(2026, 10, 25, 12);

const configs = {
  authoritative: await loadTestConfig({ subnet: 5, mode: 'authoritative', state: '/nonexistent/state' }),
  proxy: await loadTestConfig({ subnet: 5, mode: 'proxy', state: '/nonexistent/state' }),
  proxyDirect: await loadTestConfig({
    subnet: 5,
    mode: 'proxy',
    state: '/nonexistent/state',
    uefiProxyStyle: 'direct',
  }),
  unknownBooted: await loadTestConfig({
    subnet: 5,
    mode: 'authoritative',
    state: '/nonexistent/state',
    unknownMachines: 'coreos',
  }),
};

/** Authoritative on 10.77.5.0/24 with this range. */
const authoritativeWithRange = (range: [string, string]) =>
  loadTestConfig({
    subnet: 5,
    mode: 'authoritative',
    state: '/nonexistent',
    pool: { subnet: '10.77.5.0/24', range },
  });

interface Scenario {
  config: Config;
  leases?: LeaseTable;
  port?: DecideContext['port'];
  /** Sent to the server's address rather than broadcast (a renewal). */
  unicast?: boolean;
  now?: number;
  assets?: string[];
}

/** Encodes the request to bytes and decodes it again, as the shell does. */
function decoded(spec: RequestSpec): DhcpRequest {
  const result = decodeDhcpRequest(requestBytes(spec));
  if (!result.ok) throw new Error(result.reason);
  return result.packet;
}

/** Decides `spec` as the shell does, and applies the lease change. */
function decideFor(spec: RequestSpec, scenario: Scenario): Outcome {
  const leases = scenario.leases ?? new LeaseTable();
  const outcome = decide(decoded(spec), {
    settings: settingsFor(scenario.config),
    decision: testDecision(() => scenario.config),
    leases,
    now: scenario.now ?? NOW,
    port: scenario.port ?? 'dhcp',
    unicast: scenario.unicast ?? false,
    assetExists: (path) => (scenario.assets ?? []).includes(path),
  });
  if (outcome.leaseChange) leases.apply(outcome.leaseChange);
  return outcome;
}

function replyOf(outcome: Outcome): DhcpPacket & { decision: string; destination: unknown } {
  if (outcome.kind !== 'reply') throw new Error(`expected a reply, got silence: ${outcome.reason}`);
  return Object.assign(outcome.reply, { decision: outcome.decision, destination: outcome.destination });
}

const bootFileOf = (reply: DhcpPacket) => reply.file;

interface BootCase {
  name: string;
  options: (mac: Mac) => Map<number, Buffer>;
  file: string;
  firmware: string;
  arch: string;
  vendorEcho?: string;
}

const BOOT_CASES: BootCase[] = [
  {
    name: 'BIOS PXE (arch 0)',
    options: FIRMWARE.biosPxe,
    file: 'undionly.kpxe',
    firmware: 'bios-pxe',
    arch: 'x86_64',
  },
  {
    name: 'UEFI x64 (arch 7)',
    options: () => FIRMWARE.uefiPxe(7),
    file: 'ipxe.efi',
    firmware: 'uefi-pxe',
    arch: 'x86_64',
  },
  {
    name: 'UEFI x64 (arch 9)',
    options: () => FIRMWARE.uefiPxe(9),
    file: 'ipxe.efi',
    firmware: 'uefi-pxe',
    arch: 'x86_64',
  },
  {
    name: 'UEFI arm64 (arch 11)',
    options: () => FIRMWARE.uefiPxe(11),
    file: 'arm64-efi/ipxe.efi',
    firmware: 'uefi-pxe',
    arch: 'aarch64',
  },
  {
    name: 'UEFI HTTP Boot (arch 16)',
    options: () => FIRMWARE.uefiHttp(16),
    file: `${BASE}/assets/ipxe.efi`,
    firmware: 'uefi-http',
    arch: 'x86_64',
    vendorEcho: 'HTTPClient',
  },
  {
    name: 'iPXE ROM on BIOS',
    options: FIRMWARE.biosIpxeRom,
    file: `${BASE}/boot.ipxe`,
    firmware: 'ipxe',
    arch: 'x86_64',
  },
  {
    name: 'iPXE after EDK2',
    options: FIRMWARE.ipxeEfi,
    file: `${BASE}/boot.ipxe`,
    firmware: 'ipxe',
    arch: 'x86_64',
  },
];

t.test('authoritative mode: each firmware gets its boot file, next-server and an address', async (t) => {
  for (const boot of BOOT_CASES) {
    const leases = new LeaseTable();
    const scenario = { config: configs.authoritative, leases, assets: ['arm64-efi/ipxe.efi'] };
    const offer = replyOf(
      decideFor({ type: 'discover', mac: LISTED_MAC, options: boot.options(LISTED_MAC) }, scenario),
    );
    t.equal(offer.decision, 'offer', `${boot.name}: offer`);
    t.equal(offer.yiaddr, '10.77.5.21', `${boot.name}: the reserved address`);
    t.equal(offer.siaddr, SERVER, `${boot.name}: next-server`);
    t.equal(bootFileOf(offer), boot.file, `${boot.name}: boot file`);
    t.equal(readAddress(offer.options, Option.serverIdentifier), SERVER);
    t.equal(readAddress(offer.options, Option.subnetMask), '255.255.255.0');
    t.equal(readAddress(offer.options, Option.router), SERVER);
    t.equal(readUint32(offer.options, Option.leaseTime), 3600);
    t.equal(readUint32(offer.options, Option.renewalTime), 1800);
    t.equal(readUint32(offer.options, Option.rebindingTime), 3150);
    t.equal(readText(offer.options, Option.hostName), 'node1');
    t.equal(readText(offer.options, Option.domainName), 'lab.test');
    t.equal(readText(offer.options, Option.vendorClass), boot.vendorEcho, `${boot.name}: option 60 echo`);
    if (boot.firmware === 'ipxe') {
      // 175 → sub-option 176 (no-pxedhcp) = 1, END
      t.same(
        [...(offer.options.get(Option.ipxeEncapsulated) ?? [])],
        [176, 1, 1, 255],
        'iPXE told not to wait',
      );
    } else {
      t.notOk(offer.options.has(Option.ipxeEncapsulated));
    }
    const ack = replyOf(
      decideFor(
        {
          type: 'request',
          mac: LISTED_MAC,
          options: boot.options(LISTED_MAC),
          requested: offer.yiaddr,
          serverId: SERVER,
        },
        scenario,
      ),
    );
    t.equal(ack.decision, 'ack', `${boot.name}: ack`);
    t.equal(bootFileOf(ack), boot.file);
    t.equal(ack.yiaddr, '10.77.5.21');
    const event = decideFor(
      { type: 'discover', mac: LISTED_MAC, options: boot.options(LISTED_MAC) },
      scenario,
    ).events[0];
    t.match(
      event?.detail,
      { firmware: boot.firmware, arch: boot.arch, bootFile: boot.file },
      `${boot.name}: event`,
    );
  }
});

t.test('proxy mode: boot info only, no address, broadcast, PXEClient identity and GUID echo', async (t) => {
  for (const boot of BOOT_CASES) {
    const scenario = { config: configs.proxy, assets: ['arm64-efi/ipxe.efi'] };
    const spec: RequestSpec = {
      type: 'discover',
      mac: LISTED_MAC,
      options: boot.options(LISTED_MAC),
      broadcast: false,
    };
    const offer = replyOf(decideFor(spec, scenario));
    t.equal(offer.yiaddr, '0.0.0.0', `${boot.name}: no address`);
    t.notOk(offer.options.has(Option.leaseTime), `${boot.name}: no lease time`);
    t.notOk(offer.options.has(Option.subnetMask));
    t.notOk(offer.options.has(Option.router));
    t.equal(offer.flags & BROADCAST_FLAG, BROADCAST_FLAG, 'broadcast flag set');
    t.same(offer.destination, { kind: 'broadcast' });
    t.equal(offer.siaddr, SERVER);
    t.equal(readAddress(offer.options, Option.serverIdentifier), SERVER);
    t.equal(readText(offer.options, Option.vendorClass), boot.vendorEcho ?? 'PXEClient');
    t.same(offer.options.get(Option.clientMachineId), boot.options(LISTED_MAC).get(Option.clientMachineId));
    t.notOk(offer.options.has(Option.ipxeEncapsulated), 'no no-pxedhcp: we are the proxy');
    const expectedFile = boot.firmware === 'uefi-pxe' ? '' : boot.file;
    t.equal(bootFileOf(offer), expectedFile, `${boot.name}: file in the offer`);
    const bypass = offer.options.get(Option.vendorSpecific);
    if (boot.firmware === 'bios-pxe')
      t.same([...(bypass ?? [])], [6, 1, 8, 255], 'BIOS: option 43 discovery bypass');
    else t.notOk(bypass, `${boot.name}: no option 43`);
  }
});

t.test(
  'proxy mode, boot-server style: UEFI asks on port 4011 and gets the file in a unicast ACK',
  async (t) => {
    for (const arch of [7, 9, 11]) {
      const scenario = {
        config: configs.proxy,
        assets: ['arm64-efi/ipxe.efi'],
        port: 'boot-server' as const,
      };
      const request: RequestSpec = {
        type: 'request',
        mac: LISTED_MAC,
        options: FIRMWARE.uefiPxe(arch),
        ciaddr: '10.77.5.150',
        serverId: SERVER,
        broadcast: false,
      };
      const ack = replyOf(decideFor(request, scenario));
      t.equal(ack.decision, 'ack');
      t.same(ack.destination, { kind: 'sender' });
      t.equal(ack.yiaddr, '0.0.0.0');
      t.equal(ack.ciaddr, '10.77.5.150');
      t.equal(ack.siaddr, SERVER);
      t.equal(ack.file, arch === 11 ? 'arm64-efi/ipxe.efi' : 'ipxe.efi');
      t.equal(readText(ack.options, Option.vendorClass), 'PXEClient');
      t.ok(ack.options.has(Option.clientMachineId));
    }
  },
);

t.test(
  'proxy mode, direct style: UEFI gets file, siaddr and the option 43 bypass in the offer',
  async (t) => {
    const offer = replyOf(
      decideFor(
        { type: 'discover', mac: LISTED_MAC, options: FIRMWARE.uefiPxe(7) },
        { config: configs.proxyDirect },
      ),
    );
    t.equal(offer.file, 'ipxe.efi');
    t.equal(offer.siaddr, SERVER);
    t.same([...(offer.options.get(Option.vendorSpecific) ?? [])], [6, 1, 8, 255]);
  },
);

t.test('proxy mode stays out of the LAN server’s business', async (t) => {
  const scenario = { config: configs.proxy };
  const linux = decideFor(
    { type: 'discover', mac: LISTED_MAC, options: FIRMWARE.linux(LISTED_MAC) },
    scenario,
  );
  t.match(linux, { kind: 'silent', reason: 'not-boot-client', events: [] });
  const pxeRequest = decideFor(
    {
      type: 'request',
      mac: LISTED_MAC,
      options: FIRMWARE.uefiPxe(7),
      requested: '10.77.5.150',
      serverId: '10.77.5.254',
    },
    scenario,
  );
  t.match(pxeRequest, { kind: 'silent', reason: 'not-for-proxy' });
});

t.test('the chain cannot loop: iPXE never gets an iPXE binary, for any arch and either marker', async (t) => {
  let checked = 0;
  for (const config of [configs.authoritative, configs.proxy, configs.proxyDirect]) {
    for (let arch = 0; arch <= 41; arch += 1) {
      for (const marker of ['user-class', 'option-175', 'rfc3004-user-class']) {
        const options = FIRMWARE.uefiPxe(arch);
        if (marker === 'user-class') options.set(Option.userClass, Buffer.from('iPXE'));
        if (marker === 'option-175') options.set(Option.ipxeEncapsulated, Buffer.from([0x13, 1, 1]));
        if (marker === 'rfc3004-user-class') options.set(Option.userClass, Buffer.from('\x04iPXE', 'latin1'));
        const offer = replyOf(
          decideFor(
            { type: 'discover', mac: LISTED_MAC, options },
            { config, assets: ['arm64-efi/ipxe.efi'] },
          ),
        );
        t.equal(offer.file, `${BASE}/boot.ipxe`, `arch ${arch} ${marker}`);
        checked += 1;
      }
    }
  }
  // And the step before: what firmware gets is always an iPXE binary, which then identifies as iPXE.
  const first = replyOf(
    decideFor(
      { type: 'discover', mac: LISTED_MAC, options: FIRMWARE.biosPxe() },
      { config: configs.authoritative },
    ),
  );
  t.equal(first.file, 'undionly.kpxe');
  t.equal(checked, 3 * 42 * 3);
});

t.test('unknown machines follow unknown_machines; installed machines still get their answer', async (t) => {
  const proxyUnknown = decideFor(
    { type: 'discover', mac: UNLISTED_MAC, options: FIRMWARE.uefiPxe(7) },
    { config: configs.proxy },
  );
  t.match(proxyUnknown, { kind: 'silent', reason: 'unknown-machine' });
  t.match(proxyUnknown.events[0], {
    type: 'dhcp-ignored',
    mac: UNLISTED_MAC,
    detail: { reason: 'unknown-machine', arch: 'x86_64' },
  });

  const authoritativeUnknown = replyOf(
    decideFor(
      { type: 'discover', mac: UNLISTED_MAC, options: FIRMWARE.uefiPxe(7) },
      { config: configs.authoritative },
    ),
  );
  t.equal(authoritativeUnknown.file, '', 'an address but no boot file');
  t.ok(authoritativeUnknown.yiaddr.startsWith('10.77.5.'));

  const booted = replyOf(
    decideFor(
      { type: 'discover', mac: UNLISTED_MAC, options: FIRMWARE.uefiPxe(7) },
      { config: configs.unknownBooted },
    ),
  );
  t.equal(booted.file, 'ipxe.efi', 'unknown_machines: coreos boots unknown MACs');

  const installed = replyOf(
    decideFor(
      { type: 'discover', mac: INSTALLED_MAC, options: FIRMWARE.ipxeEfi(INSTALLED_MAC) },
      { config: configs.proxy },
    ),
  );
  t.equal(installed.file, `${BASE}/boot.ipxe`, 'the script, not silence, sends it to its disk');
});

t.test(
  'arm64 without its binary under assets, and unsupported arches, are not answered with a file',
  async (t) => {
    const missing = decideFor(
      { type: 'discover', mac: LISTED_MAC, options: FIRMWARE.uefiPxe(11) },
      { config: configs.proxy },
    );
    t.match(missing, { kind: 'silent', reason: 'arm64-binary-missing' });
    const ia32 = decideFor(
      { type: 'discover', mac: LISTED_MAC, options: FIRMWARE.uefiPxe(6) },
      { config: configs.proxy },
    );
    t.match(ia32, { kind: 'silent', reason: 'unsupported-arch' });
    const http = decideFor(
      { type: 'discover', mac: LISTED_MAC, options: FIRMWARE.uefiHttp(19) },
      { config: configs.proxy, assets: ['arm64-efi/ipxe.efi'] },
    );
    t.equal(replyOf(http).file, `${BASE}/assets/arm64-efi/ipxe.efi`);
  },
);

t.test('RFC 2131 client states in authoritative mode', async (t) => {
  const config = configs.authoritative;
  const mac = '52:54:00:10:00:01' as Mac;
  const options = FIRMWARE.linux(mac);
  const leases = new LeaseTable();
  const scenario = { config, leases };

  const offer = replyOf(decideFor({ type: 'discover', mac, options }, scenario));
  t.equal(offer.yiaddr, '10.77.5.100', 'first pool address');
  t.same(offer.options.get(Option.clientIdentifier), options.get(Option.clientIdentifier), 'RFC 6842 echo');
  t.notOk(offer.options.has(Option.requestedAddress));
  t.notOk(offer.options.has(Option.parameterRequestList));

  t.test('the offered address is held for the client', async (t) => {
    const other = replyOf(decideFor({ type: 'discover', mac: '52:54:00:10:00:02' as Mac }, scenario));
    t.not(other.yiaddr, offer.yiaddr);
  });

  t.test('SELECTING another server: silent, our offer freed', async (t) => {
    const table = new LeaseTable();
    const held = replyOf(decideFor({ type: 'discover', mac, options }, { config, leases: table }));
    const chose = decideFor(
      { type: 'request', mac, options, requested: '10.77.5.250', serverId: '10.77.5.254' },
      { config, leases: table },
    );
    t.match(chose, { kind: 'silent', reason: 'other-server' });
    t.equal(table.leaseOf(mac)?.state, 'free');
    t.ok(table.isAvailable(ipToNumber(held.yiaddr), '52:54:00:77:77:77' as Mac, new Map(), NOW));
  });

  const ack = replyOf(
    decideFor({ type: 'request', mac, options, requested: offer.yiaddr, serverId: SERVER }, scenario),
  );
  t.equal(ack.decision, 'ack');
  t.equal(ack.yiaddr, offer.yiaddr);
  t.same(ack.destination, { kind: 'broadcast' });
  t.equal(leases.leaseOf(mac)?.state, 'bound');

  t.test('SELECTING an address outside the pool: NAK', async (t) => {
    const wrong = replyOf(
      decideFor({ type: 'request', mac, options, requested: '10.77.5.22', serverId: SERVER }, scenario),
    );
    t.equal(wrong.decision, 'nak');
    t.equal(wrong.yiaddr, '0.0.0.0');
    t.notOk(wrong.options.has(Option.leaseTime), 'no lease time in a NAK');
    t.same(wrong.destination, { kind: 'broadcast' });
    // the failed attempt does not steal the binding
    t.equal(leases.leaseOf(mac)?.ip, ipToNumber(offer.yiaddr));
  });

  t.test('SELECTING a free pool address we did not offer: ACK', async (t) => {
    // Deliberately lenient, as Kea is: offers are not durable, so after a restart every REQUEST in
    // flight names an address this server has no offer for, and a strict server would NAK them all.
    const table = new LeaseTable();
    const newcomer = '52:54:00:10:00:07' as Mac;
    const ack = replyOf(
      decideFor(
        { type: 'request', mac: newcomer, requested: '10.77.5.150', serverId: SERVER },
        { config, leases: table },
      ),
    );
    t.equal(ack.decision, 'ack');
    t.equal(ack.yiaddr, '10.77.5.150');
    t.equal(table.leaseOf(newcomer)?.state, 'bound');
  });

  t.test('INIT-REBOOT', async (t) => {
    const again = replyOf(decideFor({ type: 'request', mac, options, requested: offer.yiaddr }, scenario));
    t.equal(again.decision, 'ack', 'own address: ACK');
    const wrongNet = replyOf(
      decideFor({ type: 'request', mac, options, requested: '192.168.1.5' }, scenario),
    );
    t.equal(wrongNet.decision, 'nak', 'other network: NAK');
    const notYours = replyOf(
      decideFor({ type: 'request', mac, options, requested: '10.77.5.150' }, scenario),
    );
    t.equal(notYours.decision, 'nak', 'not its address: NAK');
    const stranger = decideFor(
      { type: 'request', mac: '52:54:00:10:00:09' as Mac, requested: '10.77.5.150' },
      scenario,
    );
    t.match(stranger, { kind: 'silent', reason: 'no-binding' }, 'no record: silence');
  });

  t.test('RENEWING (unicast) and REBINDING (broadcast) extend the lease; ACK goes to ciaddr', async (t) => {
    const later = NOW + 1_800_000;
    const renew = replyOf(
      decideFor(
        { type: 'request', mac, options, ciaddr: offer.yiaddr, broadcast: false },
        { ...scenario, now: later },
      ),
    );
    t.equal(renew.decision, 'ack');
    t.equal(renew.ciaddr, offer.yiaddr);
    t.same(renew.destination, { kind: 'client', address: offer.yiaddr });
    t.equal(leases.leaseOf(mac)?.expiresAt, later + 3_600_000);
    const rebind = replyOf(
      decideFor({ type: 'request', mac, options, ciaddr: offer.yiaddr }, { ...scenario, now: later }),
    );
    t.equal(rebind.decision, 'ack');
    const thief = replyOf(
      decideFor(
        { type: 'request', mac: '52:54:00:10:00:08' as Mac, ciaddr: offer.yiaddr },
        { ...scenario, now: later },
      ),
    );
    t.equal(thief.decision, 'nak', 'renewing an address someone else holds: NAK');
  });

  t.test('INFORM: configuration only, to ciaddr', async (t) => {
    const inform = replyOf(
      decideFor({ type: 'inform', mac, options, ciaddr: '10.77.5.50', broadcast: false }, scenario),
    );
    t.equal(inform.decision, 'ack');
    t.equal(inform.yiaddr, '0.0.0.0');
    t.notOk(inform.options.has(Option.leaseTime));
    t.equal(readAddress(inform.options, Option.router), SERVER);
    t.same(inform.destination, { kind: 'client', address: '10.77.5.50' });
    for (const ciaddr of ['192.168.9.9', '0.0.0.0']) {
      t.match(
        decideFor({ type: 'inform', mac, options, ciaddr, broadcast: false }, scenario),
        { kind: 'silent', reason: 'foreign-address' },
        `an INFORM from ${ciaddr}, outside every subnet served, gets no other network's settings`,
      );
    }
  });

  t.test('DECLINE takes the address out of the pool', async (t) => {
    const table = new LeaseTable();
    const held = replyOf(decideFor({ type: 'discover', mac, options }, { config, leases: table }));
    decideFor(
      { type: 'request', mac, options, requested: held.yiaddr, serverId: SERVER },
      { config, leases: table },
    );
    const declined = decideFor(
      { type: 'decline', mac, options, requested: held.yiaddr, serverId: SERVER },
      { config, leases: table },
    );
    t.match(declined, { kind: 'silent', reason: 'declined', events: [{ type: 'dhcp-decline' }] });
    const next = replyOf(decideFor({ type: 'discover', mac, options }, { config, leases: table }));
    t.not(next.yiaddr, held.yiaddr);
  });

  t.test('DECLINE: the address conflict is a warning for the operator', async (t) => {
    const table = new LeaseTable();
    const scenario = { config, leases: table };
    const held = replyOf(decideFor({ type: 'discover', mac, options }, scenario));
    decideFor({ type: 'request', mac, options, requested: held.yiaddr, serverId: SERVER }, scenario);
    const decline = { type: 'decline', mac, options, requested: held.yiaddr, serverId: SERVER } as const;
    const warningFor = operatorWarnings();
    const warning = warningFor(decoded(decline), decideFor(decline, scenario), NOW);
    const until = new Date(NOW + 3_600_000).toISOString();
    t.match(warning, {
      fields: { mac, ip: held.yiaddr, until },
      message: new RegExp(
        `address conflict: ${mac} declined ${held.yiaddr}.*kept out of the pool until ${until}.*offered another address`,
      ),
    });
    t.equal(
      warningFor(decoded(decline), decideFor(decline, scenario), NOW),
      undefined,
      'the same DECLINE again changes nothing (the client no longer holds the address): no warning',
    );
  });

  t.test('DECLINE behind a relay: the warning names the lease time that kept the address out', async (t) => {
    // 10.77.6.0/24 has a lease_time of its own (30m): the warning named dhcp.lease_time (1h).
    const scenario = { config, leases: new LeaseTable() };
    const relayed = { mac, options, giaddr: '10.77.6.1', broadcast: false };
    const held = replyOf(decideFor({ type: 'discover', ...relayed }, scenario));
    decideFor({ type: 'request', ...relayed, requested: held.yiaddr, serverId: SERVER }, scenario);
    const decline = { type: 'decline', ...relayed, requested: held.yiaddr, serverId: SERVER } as const;
    const warning = operatorWarnings()(decoded(decline), decideFor(decline, scenario), NOW);
    const until = new Date(NOW + 1_800_000).toISOString();
    t.match(warning, {
      fields: { ip: held.yiaddr, until, subnet: '10.77.6.0/24' },
      message: new RegExp(`until ${until} \\(one lease_time of 10\\.77\\.6\\.0/24\\)`),
    });
    t.notMatch(warning?.message, /dhcp\.lease_time/);
  });

  t.test('DECLINE is honoured only from the client that holds the address', async (t) => {
    const table = new LeaseTable();
    const scenario = { config, leases: table };
    const held = replyOf(decideFor({ type: 'discover', mac, options }, scenario));
    decideFor({ type: 'request', mac, options, requested: held.yiaddr, serverId: SERVER }, scenario);
    const stranger = '52:54:00:10:00:66' as Mac;
    const cases: [string, RequestSpec, string][] = [
      [
        'a stranger declines a bound address',
        { type: 'decline', mac: stranger, requested: held.yiaddr },
        'decline-not-holder',
      ],
      [
        'a stranger declines a free address',
        { type: 'decline', mac: stranger, requested: '10.77.5.180' },
        'decline-not-holder',
      ],
      [
        'the holder declines an address off our networks',
        { type: 'decline', mac, requested: '192.0.2.1' },
        'decline-not-holder',
      ],
      ['a DECLINE without option 50', { type: 'decline', mac, serverId: SERVER }, 'decline-without-address'],
      [
        'a DECLINE to another server',
        { type: 'decline', mac, requested: held.yiaddr, serverId: '10.77.5.254' },
        'other-server',
      ],
    ];
    for (const [name, spec, reason] of cases) {
      const outcome = decideFor(spec, scenario);
      t.match(outcome, { kind: 'silent', reason, events: [] }, name);
      t.equal(outcome.leaseChange, undefined, `${name}: nothing recorded`);
    }
    t.equal(table.leaseOf(mac)?.state, 'bound', 'the holder keeps its lease');
    t.ok(
      table.isAvailable(ipToNumber('10.77.5.180'), stranger, new Map(), NOW),
      'the free address stays free',
    );
  });

  t.test('RELEASE frees the address; the client gets it back first later', async (t) => {
    const released = decideFor(
      { type: 'release', mac, options, ciaddr: offer.yiaddr, serverId: SERVER },
      scenario,
    );
    t.match(released, { kind: 'silent', reason: 'released', events: [{ type: 'dhcp-release' }] });
    t.equal(leases.leaseOf(mac)?.state, 'free');
    const back = replyOf(decideFor({ type: 'discover', mac, options }, scenario));
    t.equal(back.yiaddr, offer.yiaddr);
  });
});

t.test('reservations: never handed to another MAC; the owner is NAKed off other addresses', async (t) => {
  const leases = new LeaseTable();
  const stranger = '52:54:00:20:00:01' as Mac;
  const stolen = replyOf(
    decideFor(
      { type: 'request', mac: stranger, ciaddr: '10.77.5.21' },
      { config: configs.authoritative, leases },
    ),
  );
  t.equal(stolen.decision, 'nak');
  const strangerOffer = replyOf(
    decideFor(
      { type: 'discover', mac: stranger, requested: '10.77.5.21' },
      { config: configs.authoritative, leases },
    ),
  );
  t.not(strangerOffer.yiaddr, '10.77.5.21');
  const owner = replyOf(
    decideFor(
      { type: 'request', mac: LISTED_MAC, requested: '10.77.5.120', serverId: SERVER },
      { config: configs.authoritative, leases },
    ),
  );
  t.equal(owner.decision, 'nak');
});

t.test(
  'a reserved machine whose reservation is unavailable is bound to a pool address, and moves back to the reservation once it is free',
  async (t) => {
    const leases = new LeaseTable();
    const scenario = { config: configs.authoritative, leases };
    const options = FIRMWARE.uefiPxe(7);
    const bound = replyOf(decideFor({ type: 'discover', mac: LISTED_MAC, options }, scenario));
    t.equal(bound.yiaddr, '10.77.5.21');
    decideFor(
      { type: 'request', mac: LISTED_MAC, options, requested: '10.77.5.21', serverId: SERVER },
      scenario,
    );
    // Another host answers ARP for 10.77.5.21: the machine declines it, for one lease time.
    decideFor(
      { type: 'decline', mac: LISTED_MAC, options, requested: '10.77.5.21', serverId: SERVER },
      scenario,
    );

    const offer = replyOf(decideFor({ type: 'discover', mac: LISTED_MAC, options }, scenario));
    t.not(offer.yiaddr, '10.77.5.21', 'offered a pool address');
    const ack = decideFor(
      { type: 'request', mac: LISTED_MAC, options, requested: offer.yiaddr, serverId: SERVER },
      scenario,
    );
    t.match(
      ack,
      { kind: 'reply', decision: 'ack', events: [{ detail: { reservationUnavailable: '10.77.5.21' } }] },
      'and bound to it; the event says why',
    );
    const renewal = replyOf(
      decideFor(
        { type: 'request', mac: LISTED_MAC, options, ciaddr: offer.yiaddr },
        { ...scenario, now: NOW + 1_800_000 },
      ),
    );
    t.equal(renewal.decision, 'ack', 'renewed while the reservation is declined');

    const afterDecline = NOW + 3_600_001;
    const moved = replyOf(
      decideFor(
        { type: 'request', mac: LISTED_MAC, options, ciaddr: offer.yiaddr },
        { ...scenario, now: afterDecline },
      ),
    );
    t.equal(moved.decision, 'nak', 'the reservation is free again: the pool address is NAKed');
    const back = replyOf(
      decideFor({ type: 'discover', mac: LISTED_MAC, options }, { ...scenario, now: afterDecline }),
    );
    t.equal(back.yiaddr, '10.77.5.21', 'and the reservation offered');

    // A reservation added by a reload while another client holds the address: the same rule.
    const held = new LeaseTable();
    held.apply({
      kind: 'bind',
      mac: '52:54:00:20:00:09' as Mac,
      ip: ipToNumber('10.77.5.21'),
      expiresAt: NOW + 3_600_000,
    });
    const elsewhere = replyOf(
      decideFor(
        { type: 'discover', mac: LISTED_MAC, options },
        { config: configs.authoritative, leases: held },
      ),
    );
    const heldAck = replyOf(
      decideFor(
        { type: 'request', mac: LISTED_MAC, options, requested: elsewhere.yiaddr, serverId: SERVER },
        { config: configs.authoritative, leases: held },
      ),
    );
    t.equal(heldAck.decision, 'ack', 'bound to the pool address it was offered');
  },
);

t.test('relay: giaddr picks the pool and the reply goes to giaddr:67', async (t) => {
  const leases = new LeaseTable();
  const mac = '52:54:00:30:00:01' as Mac;
  const offer = replyOf(
    decideFor(
      { type: 'discover', mac, options: FIRMWARE.biosPxe(), giaddr: '10.77.6.1', broadcast: false },
      { config: configs.authoritative, leases },
    ),
  );
  t.equal(offer.yiaddr, '10.77.6.10', 'from the relay subnet');
  t.equal(offer.giaddr, '10.77.6.1');
  t.same(offer.destination, { kind: 'relay', address: '10.77.6.1' });
  t.equal(readUint32(offer.options, Option.leaseTime), 1800, 'the relay subnet’s lease time');
  t.equal(readAddress(offer.options, Option.router), '10.77.6.1');
  t.equal(offer.file, '');
  const unknownRelay = decideFor(
    { type: 'discover', mac, giaddr: '10.99.0.1' },
    { config: configs.authoritative, leases },
  );
  t.match(unknownRelay, { kind: 'silent', reason: 'no-subnet', events: [] });
  // A boot client behind a relay no subnet is configured for is left unanswered: like every other
  // unanswered boot client it leaves an event, or the operator sees nothing at all.
  const unknownRelayBoot = decideFor(
    { type: 'discover', mac, options: FIRMWARE.biosPxe(), giaddr: '10.99.0.1' },
    { config: configs.authoritative, leases },
  );
  t.match(unknownRelayBoot, {
    kind: 'silent',
    reason: 'no-subnet',
    events: [
      {
        type: 'dhcp-ignored',
        mac,
        detail: { reason: 'no-subnet', relay: '10.99.0.1', firmware: 'bios-pxe', mode: 'authoritative' },
      },
    ],
  });
  const nak = replyOf(
    decideFor(
      { type: 'request', mac, requested: '10.77.5.150', giaddr: '10.77.6.1' },
      { config: configs.authoritative, leases },
    ),
  );
  t.equal(nak.decision, 'nak');
  t.same(nak.destination, { kind: 'relay', address: '10.77.6.1' });
  t.equal(nak.flags & BROADCAST_FLAG, BROADCAST_FLAG, 'relayed NAK has the broadcast bit');
});

t.test('relay: option 82 goes back unchanged, as the last option, in every reply', async (t) => {
  const leases = new LeaseTable();
  const mac = '52:54:00:30:00:03' as Mac;
  // Circuit id 0x00000001, remote id aa:bb:cc:dd:ee:ff, as a switch inserts them.
  const relayInfo = Buffer.from('0104000000010206aabbccddeeff', 'hex');
  const withRelayInfo = () => new Map([...FIRMWARE.biosPxe(), [Option.relayAgentInformation, relayInfo]]);
  const scenario = { config: configs.authoritative, leases };
  const offer = replyOf(
    decideFor(
      { type: 'discover', mac, options: withRelayInfo(), giaddr: '10.77.6.1', broadcast: false },
      scenario,
    ),
  );
  const ack = replyOf(
    decideFor(
      {
        type: 'request',
        mac,
        options: withRelayInfo(),
        giaddr: '10.77.6.1',
        requested: offer.yiaddr,
        serverId: SERVER,
      },
      scenario,
    ),
  );
  const nak = replyOf(
    decideFor(
      { type: 'request', mac, options: withRelayInfo(), requested: '10.77.5.150', giaddr: '10.77.6.1' },
      scenario,
    ),
  );
  for (const reply of [offer, ack, nak]) {
    t.same(reply.options.get(Option.relayAgentInformation), relayInfo, `${reply.decision}: echoed as sent`);
    t.equal([...reply.options.keys()].at(-1), Option.relayAgentInformation, `${reply.decision}: last`);
  }
});

t.test('a relayed client renews, informs and releases by unicast, from its relay subnet', async (t) => {
  const { subnet: _subnet, range: _range, ...relayOnlyDhcp } = configs.authoritative.dhcp;
  const relayOnly: Config = { ...configs.authoritative, dhcp: relayOnlyDhcp };
  for (const [name, config] of [
    ['with a local subnet', configs.authoritative],
    ['relay-only', relayOnly],
  ] as const) {
    const leases = new LeaseTable();
    const scenario = { config, leases };
    const mac = '52:54:00:30:00:02' as Mac;
    const offer = replyOf(
      decideFor({ type: 'discover', mac, giaddr: '10.77.6.1', broadcast: false }, scenario),
    );
    decideFor(
      { type: 'request', mac, giaddr: '10.77.6.1', requested: offer.yiaddr, serverId: SERVER },
      scenario,
    );
    // RENEWING: unicast straight to the server, so no relay and no giaddr (RFC 2131 §4.3.2).
    const later = NOW + 900_000;
    const renewal = replyOf(
      decideFor(
        { type: 'request', mac, ciaddr: offer.yiaddr, broadcast: false },
        { ...scenario, now: later, unicast: true },
      ),
    );
    t.equal(renewal.decision, 'ack', `${name}: RENEW ACKed`);
    t.equal(readUint32(renewal.options, Option.leaseTime), 1800, `${name}: the relay subnet’s lease time`);
    t.equal(leases.leaseOf(mac)?.expiresAt, later + 1_800_000);
    const inform = replyOf(
      decideFor(
        { type: 'inform', mac, ciaddr: offer.yiaddr, broadcast: false },
        { ...scenario, unicast: true },
      ),
    );
    t.equal(
      readAddress(inform.options, Option.router),
      '10.77.6.1',
      `${name}: INFORM gets the relay subnet’s router`,
    );
    const release = decideFor(
      { type: 'release', mac, ciaddr: offer.yiaddr, serverId: SERVER },
      { ...scenario, unicast: true },
    );
    t.match(
      release,
      { reason: 'released', leaseChange: { kind: 'release' } },
      `${name}: RELEASE frees the lease`,
    );
  }
});

t.test('a relayed client renewing by unicast is NAKed at its address, where it can hear it', async (t) => {
  // Its RENEW came without giaddr: a NAK broadcast on the server's segment never crosses the relay,
  // and the client would keep the refused address until it rebinds (at 7/8 of the lease).
  const mac = '52:54:00:30:00:03' as Mac;
  const renewal = replyOf(
    decideFor(
      { type: 'request', mac, ciaddr: '10.77.6.50', broadcast: false },
      { config: configs.authoritative, leases: new LeaseTable(), unicast: true },
    ),
  );
  t.equal(renewal.decision, 'nak', 'an address outside the relay range');
  t.same(renewal.destination, { kind: 'client', address: '10.77.6.50' });
  const rebinding = replyOf(
    decideFor(
      { type: 'request', mac, ciaddr: '10.77.6.50' },
      { config: configs.authoritative, leases: new LeaseTable() },
    ),
  );
  t.equal(rebinding.decision, 'nak', 'the same address rebinding on the local segment');
  t.same(rebinding.destination, { kind: 'broadcast' }, 'not unicast to an address of another network');
});

t.test('a relayed INFORM is answered straight to ciaddr, not through the relay', async (t) => {
  // RFC 2131 §4.3.5: the ACK goes "directly to the address given in ciaddr". A relay delivers a
  // reply to yiaddr (RFC 1542 §5.4; ISC and OpenBSD dhcrelay), which an INFORM's ACK leaves 0:
  // handed to the relay without the broadcast bit, it never reached the client.
  const mac = '52:54:00:30:00:05' as Mac;
  const inform = replyOf(
    decideFor(
      { type: 'inform', mac, ciaddr: '10.77.6.50', giaddr: '10.77.6.1', broadcast: false },
      { config: configs.authoritative, leases: new LeaseTable() },
    ),
  );
  t.equal(inform.decision, 'ack');
  t.equal(inform.yiaddr, '0.0.0.0');
  t.equal(readAddress(inform.options, Option.router), '10.77.6.1', 'the relay subnet’s settings');
  t.same(inform.destination, { kind: 'client', address: '10.77.6.50' });
});

t.test(
  'a broadcast from the local segment is served from the local subnet, whatever its ciaddr',
  async (t) => {
    const leases = new LeaseTable();
    const scenario = { config: configs.authoritative, leases };
    const mac = '52:54:00:30:00:03' as Mac;
    // A stale ciaddr in a DISCOVER (RFC 2131 says 0) does not move the client to a relay subnet.
    const offer = replyOf(decideFor({ type: 'discover', mac, ciaddr: '10.77.6.15' }, scenario));
    t.ok(offer.yiaddr.startsWith('10.77.5.'), `offered ${offer.yiaddr} from the local pool`);
    // Unicast to 10.77.6.15 would be routed to the relay subnet, away from the client on this segment.
    t.same(offer.destination, { kind: 'broadcast' }, 'the offer is broadcast, not sent to the stale ciaddr');
    // A machine moved from a relayed rack onto the local segment rebinds by broadcast: NAKed, so it
    // starts over with a local address instead of keeping one that is not routed here.
    const relayed = replyOf(
      decideFor({ type: 'discover', mac: '52:54:00:30:00:04' as Mac, giaddr: '10.77.6.1' }, scenario),
    );
    decideFor(
      {
        type: 'request',
        mac: '52:54:00:30:00:04' as Mac,
        giaddr: '10.77.6.1',
        requested: relayed.yiaddr,
        serverId: SERVER,
      },
      scenario,
    );
    const rebind = replyOf(
      decideFor({ type: 'request', mac: '52:54:00:30:00:04' as Mac, ciaddr: relayed.yiaddr }, scenario),
    );
    t.equal(rebind.decision, 'nak', 'broadcast REBIND of a relay-subnet address from the local segment');
    // The same request sent to the server's address is a renewal through the router: ACKed.
    const renewal = replyOf(
      decideFor(
        { type: 'request', mac: '52:54:00:30:00:04' as Mac, ciaddr: relayed.yiaddr },
        { ...scenario, unicast: true },
      ),
    );
    t.equal(renewal.decision, 'ack');
  },
);

t.test('the network and broadcast addresses are never handed out', async (t) => {
  const wholeSubnet = await authoritativeWithRange(['10.77.5.0', '10.77.5.255']);
  const leases = new LeaseTable();
  const offered = new Set<string>();
  for (let index = 0; index < 256; index += 1) {
    const mac = `52:54:00:41:00:${index.toString(16).padStart(2, '0')}` as Mac;
    const outcome = decideFor({ type: 'discover', mac }, { config: wholeSubnet, leases });
    if (outcome.kind === 'reply') offered.add(outcome.reply.yiaddr);
  }
  t.notOk(offered.has('10.77.5.0'), 'not the network address');
  t.notOk(offered.has('10.77.5.255'), 'not the broadcast address');
  t.equal(offered.size, 252, 'every other address but the server’s and the reservation');
  const asked = replyOf(
    decideFor(
      { type: 'request', mac: '52:54:00:41:01:00' as Mac, requested: '10.77.5.255', serverId: SERVER },
      { config: wholeSubnet, leases: new LeaseTable() },
    ),
  );
  t.equal(asked.decision, 'nak', 'a REQUEST for the broadcast address is NAKed');
});

t.test(
  'a reply larger than the client accepts leaves out the host name first; option 57 raises the limit',
  async (t) => {
    const longName = Array.from({ length: 4 }, () => 'a'.repeat(62)).join('.');
    const config: Config = {
      ...configs.authoritative,
      machines: configs.authoritative.machines.map((machine) =>
        machine.mac === LISTED_MAC ? { ...machine, hostname: longName } : machine,
      ),
    };
    const options = FIRMWARE.ipxeEfi(LISTED_MAC);
    const outcome = decideFor({ type: 'discover', mac: LISTED_MAC, options }, { config });
    const offer = replyOf(outcome);
    t.ok(encodeDhcpPacket(offer).length <= 548, 'fits the 548 bytes every client accepts');
    t.notOk(offer.options.has(Option.hostName), 'without the host name');
    t.equal(readText(offer.options, Option.domainName), 'lab.test', 'the rest is kept');
    t.equal(offer.file, `${BASE}/boot.ipxe`);
    t.match(
      outcome.events[0]?.detail,
      { omittedOptions: [Option.hostName] },
      'the event says what was left out',
    );

    // RFC 2132 §9.10: option 57 is the largest IP datagram the client accepts.
    options.set(Option.maxMessageSize, Buffer.from([0x05, 0xdc]));
    const larger = replyOf(decideFor({ type: 'discover', mac: LISTED_MAC, options }, { config }));
    t.equal(readText(larger.options, Option.hostName), longName, 'a client that accepts 1500 bytes gets it');
    t.ok(encodeDhcpPacket(larger).length <= 1472);
  },
);

t.test('the pool runs out: silence and an event, no duplicate address', async (t) => {
  const small = await loadTestConfig({
    subnet: 5,
    mode: 'authoritative',
    state: '/nonexistent',
    poolEnd: 103,
  });
  const leases = new LeaseTable();
  const given = new Set<string>();
  for (let index = 0; index < 4; index += 1) {
    const mac = `52:54:00:40:00:0${index}` as Mac;
    const offer = replyOf(decideFor({ type: 'discover', mac }, { config: small, leases }));
    given.add(offer.yiaddr);
    replyOf(
      decideFor(
        { type: 'request', mac, requested: offer.yiaddr, serverId: SERVER },
        { config: small, leases },
      ),
    );
  }
  t.equal(given.size, 4);
  const fifth = decideFor({ type: 'discover', mac: '52:54:00:40:00:09' as Mac }, { config: small, leases });
  t.match(fifth, { kind: 'silent', reason: 'pool-exhausted', events: [{ type: 'dhcp-ignored' }] });

  // The operator hears of it once a minute per pool, with the DISCOVERs turned away meanwhile.
  const warningFor = operatorWarnings();
  const turnedAway = (mac: Mac, now: number) => {
    const discover = { type: 'discover', mac } as const;
    return warningFor(decoded(discover), decideFor(discover, { config: small, leases, now }), now);
  };
  const first = '52:54:00:40:00:09' as Mac;
  t.match(turnedAway(first, NOW), {
    fields: { subnet: '10.77.5.0/24', range: '10.77.5.100-10.77.5.103', mac: first },
    message: /pool of 10\.77\.5\.0\/24 \(10\.77\.5\.100-10\.77\.5\.103\) exhausted: no address to offer/,
  });
  for (let index = 1; index <= 5; index += 1)
    t.equal(
      turnedAway(`52:54:00:40:00:1${index}` as Mac, NOW + index * 1000),
      undefined,
      'within the minute',
    );
  t.match(
    turnedAway(first, NOW + EXHAUSTION_WARNING_INTERVAL_MS),
    { fields: { turnedAwaySinceLastWarning: 5 }, message: /5 more DISCOVERs were turned away/ },
    'a minute on, the next warning counts them',
  );
  // The relay's pool (10.77.6.10-20) held by offers: warned at once, the limit is per pool.
  const relayed = (mac: Mac) => {
    const discover = { type: 'discover', mac, giaddr: '10.77.6.1' } as const;
    return warningFor(
      decoded(discover),
      decideFor(discover, { config: small, leases, now: NOW + 1000 }),
      NOW + 1000,
    );
  };
  for (let index = 10; index <= 20; index += 1)
    t.equal(relayed(`52:54:00:40:01:${index}` as Mac), undefined, 'offered, no warning');
  t.match(relayed(first), { fields: { subnet: '10.77.6.0/24', turnedAwaySinceLastWarning: 0 } });
  const afterExpiry = replyOf(
    decideFor(
      { type: 'discover', mac: '52:54:00:40:00:09' as Mac },
      { config: small, leases, now: NOW + 3_600_001 },
    ),
  );
  t.ok(given.has(afterExpiry.yiaddr), 'an expired lease is reused');
});

t.test(
  'a network-booting machine left without an address by a full pool is seen as discovered',
  async (t) => {
    const single = await loadTestConfig({
      subnet: 5,
      mode: 'authoritative',
      state: '/nonexistent',
      poolEnd: 100,
    });
    const leases = new LeaseTable();
    replyOf(decideFor({ type: 'discover', mac: '52:54:00:40:00:01' as Mac }, { config: single, leases }));
    const pxe = decideFor(
      { type: 'discover', mac: INSTALLED_MAC, options: FIRMWARE.biosPxe() },
      { config: single, leases },
    );
    t.match(pxe, { kind: 'silent', reason: 'pool-exhausted' });
    const [event] = pxe.events;
    t.match(
      event?.detail,
      { reason: 'pool-exhausted', firmware: 'bios-pxe' },
      'the event names the firmware',
    );
    if (!event) return;
    const { record } = step(undefined, event, { id: 1, time: new Date(NOW).toISOString(), ms: NOW });
    t.equal(record?.state, 'discovered', 'rackboot machines shows the machine trying to boot');

    const plain = decideFor(
      {
        type: 'discover',
        mac: '52:54:00:40:00:02' as Mac,
        options: FIRMWARE.linux('52:54:00:40:00:02' as Mac),
      },
      { config: single, leases },
    );
    t.notOk(plain.events[0]?.detail?.firmware, 'a DHCP client that is not booting names no firmware');
  },
);

t.test('non-Ethernet hardware is declined by the core', async (t) => {
  const decoded = decodeDhcpRequest(requestBytes({ type: 'discover', mac: LISTED_MAC }));
  if (!decoded.ok) throw new Error(decoded.reason);
  decoded.packet.htype = 32;
  const outcome = decide(decoded.packet, {
    settings: settingsFor(configs.authoritative),
    decision: testDecision(() => configs.authoritative),
    leases: new LeaseTable(),
    now: NOW,
    port: 'dhcp',
    unicast: false,
    assetExists: () => false,
  });
  t.match(outcome, { kind: 'silent', reason: 'unsupported-hardware' });
});

t.test('hot reload: the next packet is decided with the new snapshot', async (t) => {
  const before = configs.proxy;
  const after: Config = { ...before, dhcp: { ...before.dhcp, efi_binary: 'snponly.efi' } };
  let current = before;
  const decision = testDecision(() => current);
  const leases = new LeaseTable();
  const bootServerAnswer = () => {
    const decoded = decodeDhcpRequest(
      requestBytes({ type: 'request', mac: LISTED_MAC, ciaddr: '10.77.5.150', options: FIRMWARE.uefiPxe(7) }),
    );
    if (!decoded.ok) throw new Error(decoded.reason);
    return replyOf(
      decide(decoded.packet, {
        settings: settingsFor(current),
        decision,
        leases,
        now: NOW,
        port: 'boot-server',
        unicast: true,
        assetExists: () => false,
      }),
    );
  };
  t.equal(bootServerAnswer().file, 'ipxe.efi');
  current = after;
  t.equal(bootServerAnswer().file, 'snponly.efi');
});

t.test('relay-only configuration: direct requests are not served from a relay pool', async (t) => {
  const { subnet: _subnet, range: _range, ...rest } = configs.authoritative.dhcp;
  const relayOnly: Config = { ...configs.authoritative, dhcp: rest };
  const mac = '52:54:00:31:00:01' as Mac;
  const direct = decideFor({ type: 'discover', mac }, { config: relayOnly });
  t.match(direct, { kind: 'silent', reason: 'no-subnet' });
  const relayed = replyOf(decideFor({ type: 'discover', mac, giaddr: '10.77.6.1' }, { config: relayOnly }));
  t.equal(relayed.yiaddr, '10.77.6.10');
});

t.test(
  'a range moved by a reload is searched from its own start, not from where the old one was',
  async (t) => {
    const [wide, moved] = await Promise.all([
      authoritativeWithRange(['10.77.5.100', '10.77.5.199']),
      authoritativeWithRange(['10.77.5.150', '10.77.5.160']),
    ]);
    const leases = new LeaseTable();
    const macOf = (index: number) => `52:54:00:42:00:${index.toString(16).padStart(2, '0')}` as Mac;
    for (let index = 0; index < 3; index += 1)
      replyOf(decideFor({ type: 'discover', mac: macOf(index) }, { config: wide, leases }));
    const asked = replyOf(
      decideFor({ type: 'discover', mac: macOf(9), requested: '10.77.5.150' }, { config: wide, leases }),
    );
    t.equal(asked.yiaddr, '10.77.5.150', 'the first address of the moved range is taken');
    const offered = [10, 11, 12].map(
      (index) =>
        replyOf(decideFor({ type: 'discover', mac: macOf(index) }, { config: moved, leases })).yiaddr,
    );
    t.same(offered, ['10.77.5.151', '10.77.5.152', '10.77.5.153']);
  },
);

t.test('a DNS server address inside the range is never leased, unless a machine reserves it', async (t) => {
  const two = await authoritativeWithRange(['10.77.5.100', '10.77.5.101']);
  const dnsInRange = { ...two, dhcp: { ...two.dhcp, dns: ['10.77.5.100'] } };
  const leases = new LeaseTable();
  const first = replyOf(
    decideFor({ type: 'discover', mac: '52:54:00:44:00:01' as Mac }, { config: dnsInRange, leases }),
  );
  t.equal(first.yiaddr, '10.77.5.101', 'the address that is not the DNS server');
  t.match(
    decideFor({ type: 'discover', mac: '52:54:00:44:00:02' as Mac }, { config: dnsInRange, leases }),
    { kind: 'silent', reason: 'pool-exhausted' },
    'the DNS server address is not offered',
  );
  const dnsServer = '52:54:00:44:00:03' as Mac;
  const reserved = {
    ...dnsInRange,
    machines: [...dnsInRange.machines, { mac: dnsServer, profile: 'coreos', ip: '10.77.5.100', vars: {} }],
  } as Config;
  t.equal(
    replyOf(decideFor({ type: 'discover', mac: dnsServer }, { config: reserved, leases })).yiaddr,
    '10.77.5.100',
    'the DNS server itself gets its reservation',
  );
});

t.test(
  'an expired lease offered again to its owner is held for it, not offered to the next client',
  async (t) => {
    const single = await authoritativeWithRange(['10.77.5.100', '10.77.5.100']);
    const leases = new LeaseTable();
    const owner = '52:54:00:43:00:01' as Mac;
    const next = '52:54:00:43:00:02' as Mac;
    const select = (now: number) => {
      const offer = replyOf(decideFor({ type: 'discover', mac: owner }, { config: single, leases, now }));
      return replyOf(
        decideFor(
          { type: 'request', mac: owner, requested: offer.yiaddr, serverId: SERVER },
          { config: single, leases, now },
        ),
      );
    };
    t.equal(select(NOW).decision, 'ack');
    const later = NOW + 2 * 3_600_000;
    t.equal(
      replyOf(decideFor({ type: 'discover', mac: owner }, { config: single, leases, now: later })).yiaddr,
      '10.77.5.100',
    );
    const other = decideFor({ type: 'discover', mac: next }, { config: single, leases, now: later + 1000 });
    t.match(other, { kind: 'silent', reason: 'pool-exhausted' }, 'the held address is not offered again');
    const bound = replyOf(
      decideFor(
        { type: 'request', mac: owner, requested: '10.77.5.100', serverId: SERVER },
        { config: single, leases, now: later + 2000 },
      ),
    );
    t.equal(bound.decision, 'ack', 'its owner gets it');
  },
);

t.test('a reservation on the server’s own address is never handed out', async (t) => {
  // The loader refuses such a config; one that reaches the core anyway still keeps the address out.
  const config: Config = {
    ...configs.authoritative,
    machines: configs.authoritative.machines.map((machine) =>
      machine.mac === LISTED_MAC ? { ...machine, ip: SERVER } : machine,
    ),
  };
  const leases = new LeaseTable();
  const offer = replyOf(decideFor({ type: 'discover', mac: LISTED_MAC }, { config, leases }));
  t.not(offer.yiaddr, SERVER, `offered ${offer.yiaddr}`);
  const asked = replyOf(
    decideFor({ type: 'request', mac: LISTED_MAC, requested: SERVER, serverId: SERVER }, { config, leases }),
  );
  t.equal(asked.decision, 'nak');
});
