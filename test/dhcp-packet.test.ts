import t from 'tap';
import type { Mac } from '../src/boot-plan.js';
import { Option, readUint16List } from '../src/dhcp/options.js';
import {
  BOOTREPLY,
  decodeDhcpPacket,
  decodeDhcpRequest,
  encodeDhcpPacket,
  type MalformedReason,
} from '../src/dhcp/packet.js';
import { FIRMWARE, requestBytes, requestPacket } from './dhcp/fixtures.js';

const MAC = '52:54:00:aa:bb:cc' as Mac;
const OPTIONS_OFFSET = 240;

/** A DISCOVER whose options area is replaced by `optionBytes` (no END added). */
function withOptions(optionBytes: number[]): Buffer {
  const header = requestBytes({ type: 'discover', mac: MAC }).subarray(0, OPTIONS_OFFSET);
  return Buffer.concat([header, Buffer.from(optionBytes)]);
}

t.test('round trip of an OVMF PXE DISCOVER keeps every field and option', async (t) => {
  const packet = requestPacket({ type: 'discover', mac: MAC, xid: 0xdeadbeef, options: FIRMWARE.uefiPxe(7) });
  const bytes = encodeDhcpPacket(packet);
  t.ok(bytes.length >= 300, 'padded to the BOOTP minimum of 300 bytes');
  const decoded = decodeDhcpRequest(bytes);
  if (!decoded.ok) throw new Error(decoded.reason);
  t.equal(decoded.packet.messageType, 'discover');
  t.equal(decoded.packet.xid, 0xdeadbeef);
  t.equal(decoded.packet.flags, 0x8000);
  t.same([...decoded.packet.chaddr], [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]);
  t.same(readUint16List(decoded.packet.options, Option.clientArchitecture), [7]);
  t.equal(decoded.packet.options.get(Option.vendorClass)?.toString(), 'PXEClient:Arch:00007:UNDI:003000');
  t.equal(decoded.packet.options.get(Option.clientMachineId)?.length, 17);
});

t.test('an option longer than 255 bytes is split on encode and joined on decode (RFC 3396)', async (t) => {
  const long = Buffer.alloc(300, 7);
  const packet = requestPacket({
    type: 'discover',
    mac: MAC,
    options: new Map([[Option.parameterRequestList, long]]),
  });
  const bytes = encodeDhcpPacket(packet);
  const decoded = decodeDhcpPacket(bytes);
  if (!decoded.ok) throw new Error(decoded.reason);
  t.same(decoded.packet.options.get(Option.parameterRequestList), long);
});

t.test('the pieces of a repeated option are joined in order, across areas, however many', async (t) => {
  // 21,700 one-byte pieces fill a 64 KiB datagram; joining them one by one took quadratic time.
  const pieces = 21_700;
  const optionBytes = [0x35, 1, 1];
  for (let index = 0; index < pieces; index += 1)
    optionBytes.push(Option.parameterRequestList, 1, index & 0xff);
  const decoded = decodeDhcpRequest(withOptions([...optionBytes, 0xff]));
  if (!decoded.ok) throw new Error(decoded.reason);
  const joined = decoded.packet.options.get(Option.parameterRequestList);
  t.equal(joined?.length, pieces);
  t.ok(
    joined?.every((byte, index) => byte === (index & 0xff)),
    'in the order sent',
  );

  const overloaded = withOptions([0x35, 1, 1, 0x3c, 2, 0x50, 0x58, 0x34, 1, 1, 0x3c, 1, 0x45, 0xff]);
  Buffer.from([0x3c, 2, 0x43, 0x4c, 0x3c, 1, 0x21, 0xff]).copy(overloaded, 108);
  const across = decodeDhcpRequest(overloaded);
  if (!across.ok) throw new Error(across.reason);
  t.equal(
    across.packet.options.get(Option.vendorClass)?.toString(),
    'PXECL!',
    'options area first, then file',
  );
});

t.test('PAD is one byte: the option after it is read from the right offset', async (t) => {
  // The `dhcp` npm package skips one byte too many after PAD and misreads exactly this.
  const decoded = decodeDhcpRequest(withOptions([0x35, 1, 1, 0, 0x3c, 4, 0x50, 0x58, 0x45, 0x43, 0xff]));
  if (!decoded.ok) throw new Error(decoded.reason);
  t.equal(decoded.packet.options.get(Option.vendorClass)?.toString(), 'PXEC');
});

t.test('option overload (52): options in file, then sname, are read; the fields are empty', async (t) => {
  const bytes = withOptions([0x35, 1, 1, 0x34, 1, 3, 0xff]);
  // file (offset 108): vendor class; sname (offset 44): option 93 = 7.
  Buffer.from([0x3c, 9, ...Buffer.from('PXEClient'), 0xff]).copy(bytes, 108);
  Buffer.from([0x5d, 2, 0, 7, 0xff]).copy(bytes, 44);
  const decoded = decodeDhcpRequest(bytes);
  if (!decoded.ok) throw new Error(decoded.reason);
  t.equal(decoded.packet.options.get(Option.vendorClass)?.toString(), 'PXEClient');
  t.same(readUint16List(decoded.packet.options, Option.clientArchitecture), [7]);
  t.equal(decoded.packet.file, '');
  t.equal(decoded.packet.sname, '');
  t.notOk(decoded.packet.options.has(Option.overload), 'option 52 itself is consumed');
});

t.test('a huge option 55 (several instances joined) is accepted, not a crash', async (t) => {
  const instance = [0x37, 255, ...Array.from({ length: 255 }, (_, index) => index)];
  const bytes = withOptions([0x35, 1, 1, ...instance, ...instance, ...instance, 0xff]);
  const decoded = decodeDhcpRequest(bytes);
  if (!decoded.ok) throw new Error(decoded.reason);
  t.equal(decoded.packet.options.get(Option.parameterRequestList)?.length, 765);
});

t.test(
  'a non-Ethernet hardware type decodes (the decision core declines it, the codec does not throw)',
  async (t) => {
    const bytes = requestBytes({ type: 'discover', mac: MAC });
    bytes[1] = 32; // InfiniBand
    bytes[2] = 0;
    const decoded = decodeDhcpRequest(bytes);
    t.ok(decoded.ok);
  },
);

t.test('malformed input is refused with a reason, never thrown', async (t) => {
  const good = requestBytes({ type: 'discover', mac: MAC });
  const mutate = (change: (bytes: Buffer) => void) => {
    const copy = Buffer.from(good);
    change(copy);
    return copy;
  };
  const reply = encodeDhcpPacket({ ...requestPacket({ type: 'offer', mac: MAC }), op: BOOTREPLY });
  const cases: [string, Buffer, MalformedReason][] = [
    ['empty', Buffer.alloc(0), 'short'],
    ['header without cookie', good.subarray(0, 239), 'short'],
    ['hlen 17', mutate((bytes) => (bytes[2] = 17)), 'bad-hlen'],
    ['bad magic cookie', mutate((bytes) => bytes.writeUInt32BE(0x63825364, 236)), 'bad-cookie'],
    ['option length past the end', withOptions([0x35, 1, 1, 0x3c, 50, 1, 2, 3]), 'option-overrun'],
    ['length byte missing at the end', withOptions([0x35, 1, 1, 0x3c]), 'option-overrun'],
    ['overload value 4', withOptions([0x35, 1, 1, 0x34, 1, 4, 0xff]), 'bad-overload'],
    ['overload with a bad length', withOptions([0x35, 1, 1, 0x34, 2, 1, 1, 0xff]), 'bad-overload'],
    [
      'overloaded file runs past its field',
      (() => {
        const bytes = withOptions([0x35, 1, 1, 0x34, 1, 1, 0xff]);
        // file holds a 200-byte option in its 128 bytes
        Buffer.from([0x3c, 200]).copy(bytes, 108);
        return bytes;
      })(),
      'option-overrun',
    ],
    ['BOOTREPLY from another server', reply, 'wrong-op'],
    ['BOOTP request without option 53', withOptions([0xff]), 'no-message-type'],
    ['message type 0', withOptions([0x35, 1, 0, 0xff]), 'bad-message-type'],
    ['message type 2 (OFFER) in a request', withOptions([0x35, 1, 2, 0xff]), 'bad-message-type'],
    ['message type with length 2', withOptions([0x35, 2, 1, 1, 0xff]), 'bad-message-type'],
  ];
  for (const [name, bytes, reason] of cases) {
    const decoded = decodeDhcpRequest(bytes);
    t.same(decoded, { ok: false, reason }, name);
  }
});

t.test('options area without END that stops exactly at the end of the datagram is accepted', async (t) => {
  const decoded = decodeDhcpRequest(withOptions([0x35, 1, 3]));
  t.ok(decoded.ok && decoded.packet.messageType === 'request');
});
