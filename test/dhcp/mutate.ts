/**
 * Deterministic packet mutations for the DHCP fuzz test: seeded (xorshift32), so a failure can be
 * replayed by its index. Each mutation aims at a place where a careless decoder goes wrong.
 */

export function seededRandom(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 0x1_0000_0000;
  };
}

const OPTIONS_OFFSET = 240;

export function mutatePacket(seed: Buffer, random: () => number): Buffer {
  const pick = (limit: number) => Math.floor(random() * limit);
  const bytes = Buffer.from(seed);
  switch (pick(10)) {
    case 0: {
      for (let flips = 1 + pick(8); flips > 0; flips -= 1) {
        const index = pick(bytes.length);
        bytes[index] = (bytes[index] ?? 0) ^ (1 << pick(8));
      }
      return bytes;
    }
    case 1:
      return bytes.subarray(0, pick(bytes.length));
    case 2:
      return Buffer.concat([bytes, randomBytes(1 + pick(600), random)]);
    case 3: {
      // an option length byte inside the options area set to something random
      const index = OPTIONS_OFFSET + 1 + pick(Math.max(1, bytes.length - OPTIONS_OFFSET - 1));
      if (index < bytes.length) bytes[index] = pick(256);
      return bytes;
    }
    case 4: {
      bytes[2] = pick(256); // hlen
      bytes[1] = pick(256); // htype
      return bytes;
    }
    case 5: {
      // option overload with random contents in file and sname
      const overload = Buffer.from([52, 1, pick(5)]);
      const body = Buffer.concat([
        bytes.subarray(0, OPTIONS_OFFSET),
        overload,
        bytes.subarray(OPTIONS_OFFSET),
      ]);
      randomBytes(64 + 128, random).copy(body, 44);
      return body;
    }
    case 6: {
      // a huge option 55, split over many instances
      const instances = Array.from({ length: 1 + pick(6) }, () =>
        Buffer.concat([Buffer.from([55, 255]), randomBytes(255, random)]),
      );
      return Buffer.concat([
        bytes.subarray(0, OPTIONS_OFFSET + 3),
        ...instances,
        bytes.subarray(OPTIONS_OFFSET + 3),
      ]);
    }
    case 7: {
      bytes[0] = pick(4); // op
      bytes.writeUInt32BE(pick(0x1_0000_0000), 236); // sometimes a valid cookie by accident
      if (random() < 0.5) bytes.writeUInt32BE(0x63825363, 236);
      return bytes;
    }
    case 8: {
      // random options after option 53, with random codes (echoed ones included: 61, 97, 60, 77, 175)
      const codes = [50, 54, 60, 61, 77, 93, 94, 97, 175, 43, 12, 81, pick(256)];
      const extra = Array.from({ length: 1 + pick(8) }, () => {
        const length = pick(256);
        return Buffer.concat([
          Buffer.from([codes[pick(codes.length)] ?? 0, length]),
          randomBytes(length, random),
        ]);
      });
      return Buffer.concat([bytes.subarray(0, OPTIONS_OFFSET + 3), ...extra, Buffer.from([255])]);
    }
    default:
      return randomBytes(pick(700), random);
  }
}

function randomBytes(length: number, random: () => number): Buffer {
  const bytes = Buffer.alloc(length + 3);
  for (let index = 0; index < length; index += 4)
    bytes.writeUInt32LE(Math.floor(random() * 0x1_0000_0000), index);
  return bytes.subarray(0, length);
}
