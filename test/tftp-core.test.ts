import t from 'tap';
import { toNetascii } from '../src/tftp/netascii.js';
import {
  decodeClientPacket,
  decodeRequest,
  encodeDataHeader,
  encodeError,
  encodeOack,
  isErrorPacket,
  negotiateOptions,
} from '../src/tftp/packet.js';
import { normalizeRequestedName } from '../src/tftp/paths.js';
import {
  blockRange,
  expireTimer,
  receiveAck,
  receiveClientError,
  type Step,
  startTransfer,
  type TransferParameters,
  windowSent,
} from '../src/tftp/transfer.js';

const request = (text: string) => Buffer.from(text, 'latin1');
const timing = { initialTimeoutMs: 500, minTimeoutMs: 20, maxTimeoutMs: 5000, minStallMs: 1000 };
const parameters = (overrides: Partial<TransferParameters>): TransferParameters => ({
  fileSize: 1024,
  blksize: 512,
  windowsize: 1,
  sendOack: false,
  maxRetries: 3,
  timing,
  ...overrides,
});
const dataBlocks = (step: Step) =>
  step.send.flatMap((packet) =>
    packet.kind === 'data'
      ? Array.from(
          { length: packet.lastBlock - packet.firstBlock + 1 },
          (_, index) => packet.firstBlock + index,
        )
      : [],
  );

t.test('decodes requests as real clients send them', async (t) => {
  // EDK2's size probe (real-firmware.md): RRQ ipxe.efi tsize=0 blksize=1468 windowsize=4.
  const probe = decodeRequest(
    request('\0\x01ipxe.efi\0octet\0tsize\x000\0blksize\x001468\0windowsize\x004\0'),
  );
  t.ok(probe.ok);
  if (probe.ok) {
    t.equal(probe.request.kind, 'read');
    t.equal(probe.request.filename, 'ipxe.efi');
    t.same(Object.fromEntries(probe.request.options), { tsize: '0', blksize: '1468', windowsize: '4' });
  }
  const upper = decodeRequest(request('\0\x01a\0OCTET\0BlkSize\x00800\0'));
  t.ok(upper.ok && upper.request.mode === 'octet' && upper.request.options.get('blksize') === '800');
  const write = decodeRequest(request('\0\x02upload\0octet\0'));
  t.ok(write.ok && write.request.kind === 'write');
  const table: [string, string][] = [
    ['\0', 'too-short'],
    ['\0\x03\0\x01data', 'not-a-request'],
    ['\0\x01file\0octet', 'unterminated'],
    ['\0\x01file\0', 'no-mode'],
    [`\0\x01${'a'.repeat(2000)}\0octet\0`, 'too-long'],
  ];
  for (const [bytes, reason] of table) t.same(decodeRequest(request(bytes)), { ok: false, reason }, reason);
});

t.test('decodes client packets and encodes server packets byte for byte', async (t) => {
  t.same(decodeClientPacket(Buffer.from([0, 4, 0xff, 0xff])), { kind: 'ack', block: 65535 });
  t.same(decodeClientPacket(request('\0\x05\0\x08User aborted the transfer\0')), {
    kind: 'error',
    code: 8,
    message: 'User aborted the transfer',
  });
  t.same(decodeClientPacket(Buffer.from([0, 3, 0, 1])), { kind: 'other', opcode: 3 });
  t.equal(decodeClientPacket(Buffer.from([0, 4])), undefined);
  t.ok(isErrorPacket(Buffer.from([0, 5])), 'an ERROR too short to decode is still an ERROR');
  t.notOk(isErrorPacket(Buffer.from([0, 4, 0, 5])));
  t.same([...encodeDataHeader(65536)], [0, 3, 0, 0], 'block 65536 goes out as 0');
  t.same([...encodeDataHeader(65537)], [0, 3, 0, 1]);
  t.same(encodeError(1, 'File not found'), request('\0\x05\0\x01File not found\0'));
  t.same(encodeError(0, 'caf\u00e9\n'), request('\0\x05\0\0caf??\0'), 'only printable ASCII leaves');
  t.same(
    encodeOack(
      new Map([
        ['blksize', '1468'],
        ['tsize', '9'],
      ]),
    ),
    request('\0\x06blksize\x001468\0tsize\x009\0'),
  );
});

t.test('negotiates only what was asked, clamped to the limits', async (t) => {
  const limits = { maxBlksize: 1468, maxWindowsize: 16 };
  const asked = (entries: [string, string][]) => negotiateOptions(new Map(entries), 4096, limits);
  const edk2 = asked([
    ['tsize', '0'],
    ['blksize', '1468'],
    ['windowsize', '4'],
  ]);
  t.same(Object.fromEntries(edk2.oack ?? []), { blksize: '1468', tsize: '4096', windowsize: '4' });
  t.equal(edk2.windowsize, 4);
  const greedy = asked([
    ['blksize', '65464'],
    ['windowsize', '65535'],
    ['timeout', '3'],
  ]);
  t.same(Object.fromEntries(greedy.oack ?? []), { blksize: '1468', timeout: '3', windowsize: '16' });
  t.equal(greedy.timeoutSeconds, 3);
  const nonsense = asked([
    ['blksize', '7'],
    ['timeout', '0'],
    ['windowsize', 'x'],
    ['multicast', ''],
    ['rollover', '0'],
  ]);
  t.equal(nonsense.oack, undefined, 'no acceptable option: answer with DATA 1, no OACK');
  t.equal(nonsense.blksize, 512);
  t.equal(asked([]).oack, undefined);
  // The window is read from disk in one piece: 64 blocks of 65464 bytes would be 4 MiB.
  const jumbo = negotiateOptions(
    new Map([
      ['blksize', '65464'],
      ['windowsize', '64'],
    ]),
    4096,
    { maxBlksize: 65464, maxWindowsize: 64, maxWindowBytes: 256 << 10 },
  );
  t.equal(jumbo.windowsize, 4, 'cut to the blocks that fit in maxWindowBytes');
  t.equal(jumbo.oack?.get('windowsize'), '4', 'and the OACK says so');
  const tiny = negotiateOptions(
    new Map([
      ['blksize', '65464'],
      ['windowsize', '8'],
    ]),
    4096,
    { maxBlksize: 65464, maxWindowsize: 64, maxWindowBytes: 1024 },
  );
  t.equal(tiny.windowsize, 1, 'never below one block');
});

t.test('normalises names and refuses escapes without a filesystem lookup', async (t) => {
  const accepted: [string, string][] = [
    ['ipxe.efi', 'ipxe.efi'],
    ['/ipxe.efi', 'ipxe.efi'],
    ['//boot/./ipxe.efi', 'boot/ipxe.efi'],
    ['undionly.kpxe\xff', 'undionly.kpxe'],
  ];
  for (const [raw, relative] of accepted)
    t.same(normalizeRequestedName(raw), { ok: true, relative }, JSON.stringify(raw));
  const refused: [string, string][] = [
    ['../etc/passwd', 'parent-segment'],
    ['boot/../../x', 'parent-segment'],
    ['..', 'parent-segment'],
    ['boot\\..\\x', 'backslash'],
    // decodeRequest splits fields at NUL, so a name from the wire never holds one; this one is refused anyway.
    ['a\0b', 'control-or-non-ascii'],
    ['a\nb', 'control-or-non-ascii'],
    ['caf\u00e9', 'control-or-non-ascii'],
    ['x'.repeat(300), 'name-too-long'],
    ['/', 'no-file-name'],
    ['', 'no-file-name'],
    ['.hidden', 'dotfile'],
    ['boot/.partial/kernel', 'dotfile'],
  ];
  for (const [raw, reason] of refused) {
    const result = normalizeRequestedName(raw);
    // Hidden files do not exist for clients (as /assets/ answers 404); escapes are violations.
    const code = reason === 'dotfile' ? 1 : 2;
    t.ok(
      !result.ok && result.code === code && result.reason === reason,
      `${JSON.stringify(raw.slice(0, 20))} → ${reason} (error ${code})`,
    );
  }
});

t.test('lock-step without options: DATA 1 first, empty final block on an exact multiple', async (t) => {
  let step = startTransfer(parameters({ fileSize: 1024 }), 0);
  t.same(dataBlocks(step), [1]);
  t.equal(step.state.totalBlocks, 3);
  step = receiveAck(step.state, 1, 1);
  t.same(dataBlocks(step), [2]);
  step = receiveAck(step.state, 2, 2);
  t.same(dataBlocks(step), [3]);
  t.same(blockRange(step.state, 3), { offset: 1024, length: 0 });
  step = receiveAck(step.state, 3, 3);
  t.equal(step.outcome, 'complete');
});

t.test('a duplicate ACK never causes a resend (sorcerer\u2019s apprentice)', async (t) => {
  let step = startTransfer(parameters({ fileSize: 4096 }), 0);
  step = receiveAck(step.state, 1, 1);
  const duplicate = receiveAck(step.state, 1, 2);
  t.same(duplicate.send, []);
  t.equal(duplicate.ignored, 'duplicate-ack');
  const stale = receiveAck(duplicate.state, 40000, 3);
  t.same(stale.send, []);
  t.equal(stale.ignored, 'stale-ack');
});

t.test(
  'OACK then ACK 0; ERROR 8 right after the OACK is a probe, another code or a later one an abort',
  async (t) => {
    const step = startTransfer(parameters({ sendOack: true }), 0);
    t.same(step.send, [{ kind: 'oack' }]);
    t.equal(receiveClientError(step.state, 8).outcome, 'probe', "EDK2's size probe");
    t.equal(receiveClientError(step.state, 4).outcome, 'aborted', 'EDK2 refusing an OACK it cannot parse');
    t.equal(receiveClientError(step.state, 0).outcome, 'aborted');
    t.same(receiveAck(step.state, 1, 1).send, [], 'only ACK 0 accepts the OACK');
    const sending = receiveAck(step.state, 0, 1);
    t.same(dataBlocks(sending), [1]);
    t.equal(receiveClientError(sending.state, 8).outcome, 'aborted');
  },
);

t.test(
  'windows: the ACK of the last block opens the next window; a partial ACK resumes after it',
  async (t) => {
    let step = startTransfer(parameters({ fileSize: 512 * 10 + 1, windowsize: 4 }), 0);
    t.same(dataBlocks(step), [1, 2, 3, 4]);
    step = receiveAck(step.state, 4, 1);
    t.same(dataBlocks(step), [5, 6, 7, 8]);
    step = receiveAck(step.state, 6, 2);
    t.same(dataBlocks(step), [7, 8, 9, 10], 'RFC 7440: client missed 7');
    step = receiveAck(step.state, 10, 3);
    t.same(dataBlocks(step), [11]);
    t.equal(receiveAck(step.state, 11, 4).outcome, 'complete');
  },
);

t.test('every packet sent a second time is counted as resent, and only those', async (t) => {
  let step = startTransfer(parameters({ fileSize: 512 * 10 + 1, windowsize: 4, sendOack: true }), 0);
  t.equal(step.resent ?? 0, 0, 'the first OACK');
  step = expireTimer(step.state, step.state.deadline);
  t.same(step.send, [{ kind: 'oack' }]);
  t.equal(step.resent, 1, 'the OACK again');
  step = receiveAck(step.state, 0, step.state.deadline - 1);
  t.equal(step.resent, 0, 'window 1–4, new');
  step = receiveAck(step.state, 4, step.state.deadline - 1);
  t.equal(step.resent, 0, 'window 5–8, new');
  step = receiveAck(step.state, 6, step.state.deadline - 1);
  t.same(dataBlocks(step), [7, 8, 9, 10]);
  t.equal(step.resent, 2, 'after a partial ACK: 7 and 8 go out again, 9 and 10 for the first time');
  step = expireTimer(step.state, step.state.deadline);
  t.same(dataBlocks(step), [7, 8, 9, 10]);
  t.equal(step.resent, 4, 'the timer resends the whole window');
  step = receiveAck(step.state, 10, step.state.deadline - 1);
  t.same(dataBlocks(step), [11]);
  t.equal(step.resent, 0);
});

t.test('block numbers wrap to 0 after 65535 and ACKs are matched across the wrap', async (t) => {
  let step = startTransfer(parameters({ fileSize: 512 * 65540, windowsize: 4 }), 0);
  let now = 0;
  while (step.state.acknowledged < 65532) {
    now += 1;
    step = receiveAck(step.state, step.state.sentThrough & 0xffff, now);
  }
  t.same(dataBlocks(step), [65533, 65534, 65535, 65536]);
  step = receiveAck(step.state, 0, now + 1);
  t.equal(step.state.acknowledged, 65536, 'wire ACK 0 is absolute block 65536');
  t.same(dataBlocks(step), [65537, 65538, 65539, 65540]);
  t.equal(receiveAck(step.state, 65535, now + 2).ignored, 'stale-ack', 'an old ACK from before the wrap');
  step = receiveAck(step.state, 4, now + 3);
  t.same(dataBlocks(step), [65541]);
  t.equal(receiveAck(step.state, 5, now + 4).outcome, 'complete');
});

t.test('timeouts adapt to the round trip, back off, and end the transfer after the budget', async (t) => {
  let step = startTransfer(parameters({ fileSize: 512 * 100 }), 0);
  t.equal(step.state.deadline, 500, 'initial timeout before any sample');
  let now = 0;
  for (let block = 1; block <= 20; block += 1) {
    now += 2;
    step = receiveAck(step.state, block, now);
  }
  t.equal(step.state.timeoutMs, 20, 'a 2 ms round trip brings the timeout to the floor');
  t.same(expireTimer(step.state, now + 10).send, [], 'not before the deadline');
  const resent: number[] = [];
  const waits: number[] = [];
  for (let attempt = 0; attempt < 3; attempt += 1) {
    waits.push(step.state.deadline - now);
    now = step.state.deadline;
    step = expireTimer(step.state, now);
    resent.push(...dataBlocks(step));
  }
  t.same(resent, [21, 21, 21], 'the unacknowledged block, once per timeout');
  t.same(waits, [20, 40, 80], 'exponential back-off');
  const early = expireTimer(step.state, step.state.deadline);
  t.equal(early.outcome, undefined, 'retries spent, but only 180 ms without progress: keep trying');
  t.same(dataBlocks(early), [21]);
  const final = expireTimer(early.state, 40 + 1000);
  t.equal(final.outcome, 'timeout', 'retry budget (3) spent and 1 s without progress');
  const recovered = receiveAck(step.state, 21, now + 1);
  t.equal(recovered.state.retries, 0, 'progress restores the budget');
  t.equal(recovered.state.timeoutMs, 160, 'Karn: no sample from a retransmitted block; back-off kept');
});

t.test('the ACK 0 accepting a resent OACK restores the retry budget for the data', async (t) => {
  // Slow firmware (UEFI under emulation) or a lossy start: the OACK goes out maxRetries times.
  let step = startTransfer(parameters({ fileSize: 4096, sendOack: true }), 0);
  for (let attempt = 0; attempt < 3; attempt += 1) step = expireTimer(step.state, step.state.deadline);
  t.equal(step.state.retries, 3, 'the retry budget spent on the OACK');
  const accepted = receiveAck(step.state, 0, step.state.deadline - 1);
  t.same(dataBlocks(accepted), [1]);
  t.equal(accepted.state.retries, 0, 'ACK 0 is progress, as any other ACK');
  const firstLoss = expireTimer(accepted.state, accepted.state.deadline);
  t.equal(firstLoss.outcome, undefined, 'DATA 1 lost once: resent, not given up');
  t.same(dataBlocks(firstLoss), [1]);
});

t.test('a window that waited for the disk is timed from when it went out', async (t) => {
  let step = startTransfer(parameters({ fileSize: 512 * 100 }), 0);
  step = receiveAck(step.state, 1, 10);
  t.equal(step.state.deadline, 10 + step.state.timeoutMs, 'scheduled at 10');
  const sent = windowSent(Object.freeze(step.state), 900);
  t.equal(sent.deadline, 900 + step.state.timeoutMs, 'its timeout counts from the send');
  t.same(expireTimer(sent, 901).send, [], 'no retransmission for the time the disk took');
  const acked = receiveAck(sent, 2, 904);
  t.ok(
    (acked.state.smoothedRttMs ?? 0) < 20,
    `the round trip is the network's: ${acked.state.smoothedRttMs} ms`,
  );
});

t.test('no step writes to the state it was given (the shell may still hold it)', async (t) => {
  // Every input frozen: a step writing to it would throw (transfer.ts is an ES module, so strict).
  const frozen = (step: Step) => Object.freeze(step.state);
  let step = startTransfer(parameters({ fileSize: 512 * 6, windowsize: 2, sendOack: true }), 0);
  const oackResent = expireTimer(frozen(step), 500);
  t.same(oackResent.send, [{ kind: 'oack' }]);
  step = receiveAck(frozen(oackResent), 0, 501);
  const expired = expireTimer(frozen(step), 2000);
  t.same(dataBlocks(expired), [1, 2]);
  step = receiveAck(frozen(expired), 2, 2001);
  t.equal(receiveAck(frozen(step), 2, 2002).ignored, 'duplicate-ack');
  t.same(dataBlocks(receiveAck(frozen(step), 3, 2003)), [4, 5], 'a partial ACK');
  for (let block = 4; block <= 6; block += 2) step = receiveAck(frozen(step), block, 2000 + block);
  step = receiveAck(frozen(step), 7, 2010);
  t.equal(step.outcome, 'complete');
  t.equal(receiveClientError(frozen(step), 8).outcome, undefined, 'a finished transfer stays finished');
});

t.test('netascii encoding: LF as CR LF, bare CR as CR NUL, nothing else touched', async (t) => {
  const encode = (text: string) => toNetascii(Buffer.from(text, 'latin1')).toString('latin1');
  t.equal(encode('a\nb'), 'a\r\nb');
  t.equal(encode('a\rb'), 'a\r\0b');
  t.equal(encode('a\r\nb'), 'a\r\0\r\nb', 'a file CR LF is a CR then a line end');
  t.equal(encode('\n\n\r'), '\r\n\r\n\r\0', 'at both ends');
  t.equal(encode('\0\xff'), '\0\xff');
  const plain = Buffer.from('no line ends');
  t.equal(toNetascii(plain), plain, 'nothing to encode: the same buffer, no copy');
  t.equal(toNetascii(Buffer.alloc(0)).length, 0);
});
