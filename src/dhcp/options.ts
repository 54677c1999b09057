import { ipToNumber, numberToIp } from '../ipv4.js';

/** Option codes used here (RFC 2132, RFC 4578, RFC 6842, iPXE dhcp.h). */
export const Option = {
  pad: 0,
  subnetMask: 1,
  router: 3,
  dnsServers: 6,
  hostName: 12,
  domainName: 15,
  vendorSpecific: 43,
  requestedAddress: 50,
  leaseTime: 51,
  overload: 52,
  messageType: 53,
  serverIdentifier: 54,
  parameterRequestList: 55,
  message: 56,
  maxMessageSize: 57,
  renewalTime: 58,
  rebindingTime: 59,
  vendorClass: 60,
  clientIdentifier: 61,
  tftpServerName: 66,
  bootFileName: 67,
  userClass: 77,
  relayAgentInformation: 82,
  clientArchitecture: 93,
  clientNetworkInterface: 94,
  clientMachineId: 97,
  ipxeEncapsulated: 175,
  end: 255,
} as const;

export const MessageType = {
  discover: 1,
  offer: 2,
  request: 3,
  decline: 4,
  ack: 5,
  nak: 6,
  release: 7,
  inform: 8,
} as const;
export type MessageTypeName = keyof typeof MessageType;

const MESSAGE_TYPE_NAMES = new Map<number, MessageTypeName>(
  Object.entries(MessageType).map(([name, code]) => [code, name as MessageTypeName]),
);

export function messageTypeName(code: number): MessageTypeName | undefined {
  return MESSAGE_TYPE_NAMES.get(code);
}

/** Options of a packet by code; repeated instances of a code are already concatenated (RFC 3396). */
export type OptionMap = Map<number, Buffer>;

export function readUint8(options: OptionMap, code: number): number | undefined {
  const value = options.get(code);
  return value?.length === 1 ? value[0] : undefined;
}

export function readUint16(options: OptionMap, code: number): number | undefined {
  const value = options.get(code);
  return value?.length === 2 ? value.readUInt16BE(0) : undefined;
}

export function readUint32(options: OptionMap, code: number): number | undefined {
  const value = options.get(code);
  return value?.length === 4 ? value.readUInt32BE(0) : undefined;
}

/** An option holding exactly one IPv4 address; anything else is refused, not guessed. */
export function readAddress(options: OptionMap, code: number): string | undefined {
  const value = options.get(code);
  return value?.length === 4 ? numberToIp(value.readUInt32BE(0)) : undefined;
}

/** Text options (60, 77, 12): bytes as latin1, so every byte maps to one character and nothing throws. */
export function readText(options: OptionMap, code: number): string | undefined {
  return options.get(code)?.toString('latin1');
}

/** RFC 4578 §2.1: option 93 is a list of 16-bit types; a list with an odd length is refused. */
export function readUint16List(options: OptionMap, code: number): number[] | undefined {
  const value = options.get(code);
  if (!value || value.length === 0 || value.length % 2 !== 0) return undefined;
  const list: number[] = [];
  for (let offset = 0; offset < value.length; offset += 2) list.push(value.readUInt16BE(offset));
  return list;
}

export const encodeOption = {
  uint8: (value: number) => Buffer.from([value & 0xff]),
  uint32: (value: number) => {
    const bytes = Buffer.alloc(4);
    bytes.writeUInt32BE(value >>> 0, 0);
    return bytes;
  },
  addresses: (...addresses: string[]) => {
    const bytes = Buffer.alloc(4 * addresses.length);
    addresses.forEach((address, index) => {
      bytes.writeUInt32BE(ipToNumber(address), index * 4);
    });
    return bytes;
  },
  text: (value: string) => Buffer.from(value, 'latin1'),
  /** Encapsulated sub-options (43, 175): code, length, value each, closed by END. */
  encapsulated: (suboptions: ReadonlyArray<readonly [number, Buffer]>) =>
    Buffer.concat([
      ...suboptions.map(([code, value]) => Buffer.concat([Buffer.from([code, value.length]), value])),
      Buffer.from([Option.end]),
    ]),
};
