import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeRequest, encodeDataHeader, encodeOack, negotiateOptions } from '../../src/tftp/packet.js';
import { createUdp4Socket } from '../../src/udp.js';

/**
 * The least a Node process does per TFTP datagram, as a bench peer (the counterpart of bench:http's
 * plain node:http handler): answers RRQs for files of `root` read into memory, blksize and
 * windowsize as asked, one socket per transfer, and nothing else: no retransmission, no timers,
 * no path checks, no events, no limits. Only for the loss-free scenarios of bench/tftp/run.ts.
 *   node node-floor.js '{"root": DIR, "listen": ADDRESS, "port": 69}'
 */
const settings = JSON.parse(process.argv[2] ?? '{}') as { root: string; listen: string; port: number };
const files = new Map<string, Buffer>();
const requests = createUdp4Socket();

requests.on('message', (message, peer) => {
  const decoded = decodeRequest(message);
  if (!decoded.ok || decoded.request.kind !== 'read') return;
  const name = decoded.request.filename;
  let content = files.get(name);
  if (!content) {
    content = readFileSync(join(settings.root, name));
    files.set(name, content);
  }
  const negotiated = negotiateOptions(decoded.request.options, content.length, {
    maxBlksize: 65464,
    maxWindowsize: 64,
  });
  const { blksize, windowsize } = negotiated;
  const lastBlock = Math.floor(content.length / blksize) + 1;
  const file = content;
  const transfer = createUdp4Socket();
  const sendFrom = (acknowledged: number) => {
    for (let block = acknowledged + 1; block <= Math.min(acknowledged + windowsize, lastBlock); block += 1) {
      const offset = (block - 1) * blksize;
      transfer.send(
        [encodeDataHeader(block), file.subarray(offset, offset + blksize)],
        peer.port,
        peer.address,
      );
    }
  };
  let acknowledged = 0;
  transfer.on('message', (ack) => {
    // Absolute block from the 16-bit wire number, as the real server does past 65535.
    acknowledged += (ack.readUInt16BE(2) - acknowledged + 0x10000) & 0xffff;
    if (acknowledged >= lastBlock) transfer.close();
    else if (acknowledged % windowsize === 0) sendFrom(acknowledged);
  });
  transfer.bind(0, settings.listen, () => {
    if (negotiated.oack) transfer.send(encodeOack(negotiated.oack), peer.port, peer.address);
    else sendFrom(0);
  });
});
requests.bind(settings.port, settings.listen, () => process.stdout.write('{"listening":true}\n'));
process.once('SIGTERM', () => process.exit(0));
