import { type Static, Type } from '@sinclair/typebox';
import { HOSTNAME_PATTERN, HOSTNAME_RULE, NAME_PATTERN, NOT_A_HOSTNAME, nameRule } from './names.js';

/**
 * The one schema of rackboot.yaml: the TypeScript type, the defaults, the JSON Schema shipped for
 * editors (schema/rackboot.schema.json, written by `npm run schema`) and the structural validation all
 * come from here. Checks that span several keys (duplicates, ranges inside subnets, profile names)
 * live in validate.ts.
 */

const Port = (fallback: number, description: string) =>
  Type.Integer({ minimum: 1, maximum: 65535, default: fallback, description });

/** Shorter operator tokens are guessable; server.api_token and $RACKBOOT_API_TOKEN alike. */
export const API_TOKEN_MIN_LENGTH = 16;
/**
 * Printable ASCII, no space: the token travels as `Authorization: Bearer <token>`, which the server
 * reads up to the first space, and fetch cannot send a header character beyond Latin-1.
 */
export const API_TOKEN_PATTERN = '^[!-~]+$';
export const DURATION_PATTERN = '^(\\d+(ms|s|m|h|d))+$';
/**
 * A duration such as `90s`, `30m`, `1h`, `7d`, `1h30m`, `2500ms`, or a number of seconds; the loader
 * rounds it to whole seconds. `fallback` undefined: the key has no default of its own (it inherits another's).
 */
const Duration = (fallback: string | number | undefined, description: string) =>
  Type.Union([Type.String({ pattern: DURATION_PATTERN }), Type.Integer({ minimum: 0 })], {
    ...(fallback === undefined ? {} : { default: fallback }),
    description: `${description} A duration: 90s, 30m, 1h, 7d, 1h30m, 2500ms (rounded to whole seconds), or seconds as a number.`,
  });

const Ipv4 = (description: string, fallback?: string) =>
  Type.String({ format: 'ipv4', description, ...(fallback === undefined ? {} : { default: fallback }) });

/** The servers bind IPv4 sockets only (udp4, and URLs built as http://LISTEN:PORT), so no names or IPv6. */
const ListenAddress = (description: string) =>
  Ipv4(`${description} An IPv4 address of this host, or 0.0.0.0 for all.`, '0.0.0.0');

const HttpSchema = Type.Object(
  {
    port: Port(8080, 'TCP port of the HTTP server (boot scripts, assets, Ignition, API, dashboard).'),
    listen: ListenAddress(
      'Address the HTTP server binds; URLs handed to machines always use server.address.',
    ),
  },
  { additionalProperties: false, default: {} },
);

const TftpSchema = Type.Object(
  {
    port: Port(69, 'UDP port of the TFTP server.'),
    listen: ListenAddress('Address the TFTP server binds.'),
    max_blksize: Type.Integer({
      minimum: 512,
      maximum: 65464,
      default: 1468,
      description: 'Largest block size granted (RFC 2348); 1468 fills a 1500-byte Ethernet frame.',
    }),
    max_windowsize: Type.Integer({
      minimum: 1,
      maximum: 64,
      default: 16,
      description: 'Largest window granted (RFC 7440).',
    }),
    max_transfers: Type.Integer({
      minimum: 1,
      default: 200,
      description: 'Concurrent transfers, all clients.',
    }),
    max_transfers_per_client: Type.Integer({
      minimum: 1,
      default: 8,
      description: 'Concurrent transfers from one client IP.',
    }),
    retries: Type.Integer({
      minimum: 1,
      maximum: 20,
      default: 6,
      description: 'Retransmissions of one packet before a stalled transfer is dropped.',
    }),
  },
  { additionalProperties: false, default: {} },
);

const DhcpPortsSchema = Type.Object(
  {
    port: Port(67, 'UDP port of the DHCP server.'),
    proxy_port: Port(4011, 'UDP port of the PXE boot-server exchange (proxy mode).'),
  },
  { additionalProperties: false, default: {} },
);

const ServerSchema = Type.Object(
  {
    address: Ipv4(
      'This host on the provisioning LAN: DHCP server identifier, next-server, and the host in every URL. ' +
        'Must be an address of this host on that LAN: 0.0.0.0, broadcast and multicast are refused; a loopback address is a warning unless dhcp.mode is off.',
    ),
    http: HttpSchema,
    tftp: TftpSchema,
    dhcp: DhcpPortsSchema,
    assets: Type.String({
      default: 'boot-assets',
      description:
        'Directory served at /assets/ over HTTP and as the TFTP root (relative to the config file).',
    }),
    state: Type.String({
      default: 'state',
      description:
        'Directory for leases, provisioning history and the server secret (relative to the config file).',
    }),
    api_token: Type.Optional(
      Type.String({
        minLength: API_TOKEN_MIN_LENGTH,
        pattern: API_TOKEN_PATTERN,
        description:
          'Bearer token for operator API calls (reprovision, adopt): printable ASCII, no spaces. $RACKBOOT_API_TOKEN overrides it. Without either, the server makes its own in <server.state>/operator-token (0600), which the CLI on the same host reads.',
      }),
    ),
    log_level: Type.Union(
      ['trace', 'debug', 'info', 'warn', 'error'].map((level) => Type.Literal(level)),
      { default: 'info', description: 'Least severe log level written.' },
    ),
  },
  { additionalProperties: false },
);

/**
 * The keys of an address pool. The top-level pool's descriptions say when they matter (`needed`:
 * subnet and range; `effect`: all of them); a relay subnet's always do.
 */
const poolFields = (needed = '', effect = '') => ({
  subnet: Type.String({ description: `Network in CIDR form, e.g. 10.77.0.0/24.${needed}${effect}` }),
  range: Type.Tuple([Ipv4('First pool address.'), Ipv4('Last pool address.')], {
    description: `First and last address handed out dynamically.${needed}${effect}`,
  }),
  router: Type.Optional(Ipv4(`Default gateway (option 3).${effect}`)),
  dns: Type.Optional(Type.Array(Ipv4('DNS server.'), { description: `DNS servers (option 6).${effect}` })),
  domain: Type.Optional(Type.String({ description: `Domain name (option 15).${effect}` })),
});
const RelayPoolFields = poolFields();
const MainPoolFields = poolFields(' Required in authoritative mode.', ' Ignored in proxy mode.');

const RelaySubnetSchema = Type.Object(
  {
    ...RelayPoolFields,
    lease_time: Type.Optional(
      Duration(undefined, 'Lease length for this subnet, 1s to 4294967294 s; default: dhcp.lease_time.'),
    ),
  },
  { additionalProperties: false, description: 'A subnet served through a DHCP relay (giaddr inside it).' },
);

const DhcpSchema = Type.Object(
  {
    mode: Type.Union([Type.Literal('proxy'), Type.Literal('authoritative'), Type.Literal('off')], {
      default: 'proxy',
      description:
        'proxy: answer only network-boot clients and leave addresses to the LAN DHCP server; ' +
        'authoritative: own the addresses of the provisioning network; off: no DHCP.',
    }),
    subnet: Type.Optional(MainPoolFields.subnet),
    range: Type.Optional(MainPoolFields.range),
    router: MainPoolFields.router,
    dns: MainPoolFields.dns,
    domain: MainPoolFields.domain,
    lease_time: Duration(
      '1h',
      'Lease length, 1s to 4294967294 s (authoritative mode; ignored in proxy mode).',
    ),
    subnets: Type.Array(RelaySubnetSchema, {
      default: [],
      description:
        'Further subnets reached through DHCP relays (authoritative mode). None may overlap dhcp.subnet or another entry.',
    }),
    uefi_proxy_style: Type.Union([Type.Literal('boot-server'), Type.Literal('direct')], {
      default: 'boot-server',
      description:
        'How proxy mode answers UEFI PXE: boot-server (offer without a boot file; the firmware asks on ' +
        'port 4011, as pixiecore and dnsmasq do) or direct (boot file, siaddr and option 43 bypass in the offer).',
    }),
    efi_binary: Type.Union([Type.Literal('ipxe.efi'), Type.Literal('snponly.efi')], {
      default: 'ipxe.efi',
      description:
        'iPXE build for x86-64 UEFI: native drivers (ipxe.efi) or the firmware NIC driver (snponly.efi).',
    }),
    arm64_efi_binary: Type.String({
      default: 'arm64-efi/ipxe.efi',
      description: 'iPXE build for arm64 UEFI, relative to assets; offered only when the file exists.',
    }),
  },
  { additionalProperties: false, default: {} },
);

const ArchAssetsSchema = Type.Object(
  {
    kernel: Type.Optional(Type.String({ description: 'Kernel for this architecture.' })),
    initrd: Type.Optional(Type.Array(Type.String(), { description: 'Initrds for this architecture.' })),
    rootfs: Type.Optional(Type.String({ description: 'Fedora CoreOS rootfs for this architecture.' })),
  },
  { additionalProperties: false },
);

export const ProfileSchema = Type.Object(
  {
    kind: Type.Union([Type.Literal('coreos-install'), Type.Literal('linux')], {
      description:
        'coreos-install adds the Fedora CoreOS live and install kernel arguments itself; linux boots ' +
        'kernel + initrds with exactly the given args.',
    }),
    kernel: Type.Optional(
      Type.String({
        description:
          'Path under assets, or an http(s) URL. Required unless coreos.stream or arch.<name>.kernel gives it.',
      }),
    ),
    initrd: Type.Optional(Type.Array(Type.String(), { description: 'Paths under assets, or http(s) URLs.' })),
    rootfs: Type.Optional(
      Type.String({
        description:
          'Fedora CoreOS rootfs image. Required for coreos-install unless coreos.stream or arch.<name>.rootfs gives it.',
      }),
    ),
    coreos: Type.Optional(
      Type.Object(
        {
          stream: Type.Union([Type.Literal('stable'), Type.Literal('testing'), Type.Literal('next')], {
            description: 'Take kernel, initramfs and rootfs from the manifest `rackboot fetch coreos` wrote.',
          }),
        },
        { additionalProperties: false },
      ),
    ),
    arch: Type.Optional(
      Type.Record(Type.String(), ArchAssetsSchema, {
        description: 'Per-architecture assets (x86_64, aarch64) overriding kernel/initrd/rootfs.',
      }),
    ),
    install_device: Type.Optional(
      Type.String({ description: 'Target disk, e.g. /dev/sda. Required for coreos-install.' }),
    ),
    ignition: Type.Optional(
      Type.String({
        description: 'Butane (.bu, .yaml) or Ignition (.ign, .json) template, relative to the config.',
      }),
    ),
    args: Type.Optional(
      Type.Array(Type.String(), {
        description:
          "Kernel arguments, one per item; {{...}} template variables allowed. An item written with spaces is split into that many arguments (with a warning). A var must not bring whitespace or a control character into an argument, nor start one with # (an iPXE comment): it would split iPXE's kernel line, run commands of its own or drop the rest of the line; the loader refuses it (and a machine that still gets one, through `unknown_machines`, gets a script that says why on its console; `render ipxe` shows it). iPXE's own ${...} settings are left for iPXE to expand.",
      }),
    ),
  },
  { additionalProperties: false },
);

const MachineSchema = Type.Object(
  {
    mac: Type.String({ description: 'MAC address, any common spelling.' }),
    hostname: Type.Optional(
      Type.String({
        pattern: HOSTNAME_PATTERN,
        // yaml-language-server and VS Code show it instead of the pattern; so does the loader.
        patternErrorMessage: NOT_A_HOSTNAME,
        description: `Host name (DHCP option 12, {{hostname}} in templates): ${HOSTNAME_RULE}.`,
      }),
    ),
    profile: Type.String({ description: 'Name of a profile under profiles.' }),
    ip: Type.Optional(Ipv4('Reserved address (authoritative mode; ignored in proxy mode).')),
    vars: Type.Record(
      Type.String(),
      // Numbers and booleans stay allowed here, as YAML types them, so editors accept `k8s: 1.30`;
      // the loader (parse.ts) hands templates their text as written.
      Type.Union([Type.String(), Type.Number(), Type.Boolean()], {
        description:
          'One template value, e.g. role: worker for {{vars.role}}. Templates get it as written, unquoted too: 1.30 stays 1.30 (not 1.3), 01234 keeps its 0, 0x1F stays 0x1F, true is true.',
      }),
      {
        default: {},
        // TypeBox's Value.Errors skips propertyNames: load.ts checks it (nameProblems); editors do too.
        propertyNames: { pattern: NAME_PATTERN },
        description: `Values for templates as {{vars.NAME}}; ${nameRule('vars')}.`,
      },
    ),
  },
  { additionalProperties: false },
);

const EventsSchema = Type.Object(
  {
    retention: Type.Integer({
      minimum: 1000,
      default: 200000,
      description: 'Events kept in the history; older ones are pruned.',
    }),
    http_rate: Type.Integer({
      minimum: 0,
      default: 5,
      description:
        "Events a second that HTTP requests from one address (boot scripts, Ignition fetches, asset downloads) may add to the history, in bursts of ten seconds' worth; a boot adds about six. Requests over it are still answered; their events are counted in a warning, one per address every 10 s, so one host fetching in a loop cannot push every machine's history past events.retention. 0 = no limit.",
    }),
  },
  { additionalProperties: false, default: {} },
);

const IgnitionSettingsSchema = Type.Object(
  {
    token_ttl: Duration(
      0,
      'Lifetime of the credential in {{ignition_url}} and {{events_url}}, counted from the Ignition fetch, at most 36500d (100 years); 0 = no expiry. Make it longer than a machine takes from that fetch to its first boot from disk: the installed system reports `installed` through {{events_url}}, refused (403) once expired. Turning it on or shortening it retires the URLs already handed out.',
    ),
    require_leased_address: Type.Boolean({
      default: true,
      description:
        "Authoritative mode: a machine credential is taken only from the address this server leased to that MAC, so a token copied elsewhere opens nothing. Turn off for machines with several NICs on the provisioning network: their installer may fetch its Ignition, or report, from another NIC's address, which gets 403.",
    }),
  },
  { additionalProperties: false, default: {} },
);

export const ConfigSchema = Type.Object(
  {
    $schema: Type.Optional(
      Type.String({
        description:
          'JSON Schema for editors, e.g. ./schema/rackboot.schema.json (the same as the yaml-language-server comment); rackboot ignores it.',
      }),
    ),
    server: ServerSchema,
    dhcp: DhcpSchema,
    unknown_machines: Type.String({
      default: 'ignore',
      description: 'ignore (no answer) or the name of a profile booted for any MAC not listed.',
    }),
    profiles: Type.Record(Type.String({ pattern: NAME_PATTERN }), ProfileSchema, {
      default: {},
      description:
        'What machines boot, by name (letters, digits, _ and -); machines[].profile and unknown_machines name them.',
    }),
    machines: Type.Array(MachineSchema, {
      default: [],
      description: 'The machines rackboot knows, by MAC (`rackboot machines adopt` appends to it).',
    }),
    events: EventsSchema,
    ignition: IgnitionSettingsSchema,
  },
  { additionalProperties: false, title: 'rackboot configuration' },
);

export const CONFIG_SCHEMA_ID = 'https://rackboot.dev/schema/rackboot.schema.json';

/**
 * The schema as written to disk for editors (yaml-language-server). A key with a default may be left
 * out of the file, so it is not `required` there even though the loaded Config always has it.
 */
export function editorJsonSchema(): object {
  const optionalDefaults = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(optionalDefaults);
    if (typeof node !== 'object' || node === null) return node;
    const entries = Object.entries(node).map(([key, value]) => [key, optionalDefaults(value)] as const);
    const result: Record<string, unknown> = Object.fromEntries(entries);
    const properties = result.properties as Record<string, { default?: unknown }> | undefined;
    if (Array.isArray(result.required) && properties) {
      result.required = result.required.filter((key: string) => properties[key]?.default === undefined);
    }
    return result;
  };
  const schema = optionalDefaults(ConfigSchema) as object;
  return { $schema: 'http://json-schema.org/draft-07/schema#', $id: CONFIG_SCHEMA_ID, ...schema };
}

type RawConfig = Static<typeof ConfigSchema>;
export type ProfileConfig = Static<typeof ProfileSchema>;
export type MachineConfig = Omit<Static<typeof MachineSchema>, 'mac'> & { mac: import('./mac.js').Mac };
export type RelaySubnetConfig = Static<typeof RelaySubnetSchema>;

/**
 * The validated, normalised config every server reads. Paths are absolute, durations are seconds,
 * MACs canonical. Frozen; replaced whole on reload.
 */
export interface Config extends Omit<RawConfig, 'machines' | 'dhcp' | 'ignition'> {
  /** Absolute path of the YAML file the config came from. */
  file: string;
  machines: MachineConfig[];
  dhcp: Omit<RawConfig['dhcp'], 'lease_time' | 'subnets'> & {
    lease_time: number;
    subnets: (Omit<RelaySubnetConfig, 'lease_time'> & { lease_time: number })[];
  };
  ignition: { token_ttl: number; require_leased_address: boolean };
}
