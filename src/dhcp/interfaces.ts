import type { NetworkInterfaceInfo } from 'node:os';

/**
 * The DHCP sockets listen on 0.0.0.0 (broadcasts reach no other socket), and Node's dgram has
 * neither IP_PKTINFO nor SO_BINDTODEVICE, so the server cannot tell on which interface a broadcast
 * arrived: a DISCOVER from any other network the host is on is answered from the provisioning pool
 * (an offer holds an address 60 s; a handful of such hosts can empty a small pool). The firewall can
 * tell; this is the warning that says so. Pure: `networkInterfaces()` in, warning text out.
 */
export function otherInterfacesWarning(
  interfaces: NodeJS.Dict<NetworkInterfaceInfo[]>,
  serverAddress: string,
  ports: number[],
): string | undefined {
  const named = Object.entries(interfaces).map(([name, addresses]) => ({
    name,
    ipv4: (addresses ?? []).filter((info) => info.family === 'IPv4'),
  }));
  const provisioning = named.find(({ ipv4 }) => ipv4.some((info) => info.address === serverAddress))?.name;
  const others = named
    .filter(({ name, ipv4 }) => name !== provisioning && ipv4.some((info) => !info.internal))
    .map(({ name }) => name);
  if (others.length === 0) return undefined;
  const provisioningText = provisioning
    ? `the provisioning interface ${provisioning}, which holds ${serverAddress}`
    : `no interface holds ${serverAddress}`;
  return (
    `DHCP requests arriving on ${others.join(', ')} (${provisioningText}) are answered as if they came ` +
    `from the provisioning network: Node cannot tell the interface a broadcast came in on, so in ` +
    `authoritative mode hosts there take pool addresses. Drop them in the firewall, e.g. nft add rule ` +
    `inet filter input iifname != "${provisioning ?? '<provisioning interface>'}" udp dport ` +
    `{ ${ports.join(', ')} } drop`
  );
}
