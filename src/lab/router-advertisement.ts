import { LAB_BRIDGE } from './network.js';

/**
 * iPXE (Debian's 2019 build) waits about 13 s for IPv6 router advertisements before it uses its
 * DHCPv4 result. A link-local advertisement with router lifetime 0 and no prefix ends that wait
 * without handing out an address or a route (real-firmware.md: SeaBIOS boots 21 s → 8 s, OVMF
 * 33 s → 20 s). Node has no raw ICMPv6 sockets, so radvd sends it inside the lab namespace.
 */
export function radvdConfig(): string {
  return `interface ${LAB_BRIDGE} {
  AdvSendAdvert on;
  # Not a default router, and no prefix: nothing is configured from this advertisement.
  AdvDefaultLifetime 0;
  # iPXE solicits one; answer it directly (RFC 7772) and advertise often besides.
  AdvRASolicitedUnicast on;
  MinRtrAdvInterval 3;
  MaxRtrAdvInterval 4;
};
`;
}

export function radvdArguments(configFile: string, pidFile: string): string[] {
  return ['--nodaemon', '--logmethod', 'stderr', '--config', configFile, '--pidfile', pidFile];
}
