/**
 * dnsmasq inside the lab namespace, in one of two roles:
 * - `addresses-only`: the LAN's ordinary DHCP server that knows nothing of network boot (the proxy
 *   scenario: rackboot in proxy mode supplies the boot);
 * - `boot-peer`: the classic dnsmasq network-boot set-up (DHCP + TFTP, iPXE chaining by user class,
 *   UEFI HTTP Boot) that the boot-time baseline compares rackboot with.
 */
export type DnsmasqRole =
  | { kind: 'addresses-only' }
  | { kind: 'boot-peer'; tftpRoot: string; httpBase: string };

export interface DnsmasqOptions {
  /** The interface dnsmasq serves (the lab bridge, or the LAN host's interface). */
  interface: string;
  prefix: string;
  leaseFile: string;
  role: DnsmasqRole;
}

export function dnsmasqArguments(options: DnsmasqOptions): string[] {
  const { prefix, role } = options;
  const args = [
    '--keep-in-foreground',
    '--log-facility=-',
    '--log-dhcp',
    '--conf-file=/dev/null',
    '--no-resolv',
    '--no-hosts',
    // DHCP (and TFTP) only: no DNS server.
    '--port=0',
    '--user=root',
    `--interface=${options.interface}`,
    '--bind-interfaces',
    `--dhcp-range=${prefix}.100,${prefix}.199,255.255.255.0,1h`,
    `--dhcp-leasefile=${options.leaseFile}`,
    '--dhcp-authoritative',
    '--no-ping',
  ];
  if (role.kind === 'boot-peer') {
    args.push(
      '--enable-tftp',
      `--tftp-root=${role.tftpRoot}`,
      '--dhcp-match=set:ipxe,175',
      '--dhcp-match=set:efi64,option:client-arch,7',
      '--dhcp-vendorclass=set:httpclient,HTTPClient',
      // iPXE (any firmware) gets the script; the firmware's own client gets the iPXE binary.
      `--dhcp-boot=tag:ipxe,${role.httpBase}/boot.ipxe`,
      '--dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi',
      `--dhcp-boot=tag:!ipxe,tag:httpclient,${role.httpBase}/assets/ipxe.efi`,
      '--dhcp-boot=tag:!ipxe,tag:!efi64,tag:!httpclient,undionly.kpxe',
      // UEFI HTTP Boot accepts only replies that echo vendor class HTTPClient.
      '--dhcp-option-force=tag:httpclient,60,HTTPClient',
      // iPXE's no-pxedhcp setting, as ipxe.org suggests: no 3 s wait for proxyDHCP offers.
      '--dhcp-option=tag:ipxe,encap:175,176,1b',
    );
  }
  return args;
}
