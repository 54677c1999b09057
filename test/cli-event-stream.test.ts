import t from 'tap';
import { type SseMessage, serverSentEvents } from '../src/cli/client.js';

async function parse(chunks: (string | Uint8Array)[]): Promise<SseMessage[]> {
  async function* bytes() {
    for (const chunk of chunks) yield typeof chunk === 'string' ? new TextEncoder().encode(chunk) : chunk;
  }
  const messages: SseMessage[] = [];
  for await (const batch of serverSentEvents(bytes())) messages.push(...batch);
  return messages;
}

// Every line ending the format allows, comments, a field without a colon, multi-line data, retry,
// a value's one leading space stripped (and only one), a multi-byte character, named events (and
// `message`, the name of an unnamed one).
const STREAM =
  'retry: 1000\n\n' +
  ': keep-alive\r\n\r\n' +
  'id: 7\ndata: {"a":1}\n\n' +
  'id: 8\r\ndata:  two spaces\r\ndata: second line\r\n\r\n' +
  'id: 9\rdata: é ✓\r\r' +
  'data\n\n' +
  'event: ignored\nid: 10\n\n' +
  'event: history-gap\ndata: {"after":5}\n\n' +
  'event: message\ndata: unnamed\n\n' +
  'id: 11\ndata: unterminated';
const EXPECTED: SseMessage[] = [
  { retry: 1000 },
  { id: '7', data: '{"a":1}' },
  { id: '8', data: ' two spaces\nsecond line' },
  { id: '9', data: 'é ✓' },
  { data: '' },
  { event: 'history-gap', data: '{"after":5}' },
  { data: 'unnamed' },
];

t.test('parses every line ending, field form and message boundary of the format', async (t) => {
  t.same(await parse([STREAM]), EXPECTED);
});

t.test('the same messages however the stream is cut into chunks', async (t) => {
  const bytes = new TextEncoder().encode(STREAM);
  const decoder = new TextDecoder();
  for (let cut = 1; cut < bytes.length; cut += 1) {
    // Cut inside multi-byte characters too: the parser decodes the bytes, not the test.
    const chunks = [bytes.subarray(0, cut), bytes.subarray(cut)];
    const messages = await parse(chunks);
    if (JSON.stringify(messages) !== JSON.stringify(EXPECTED)) {
      t.same(messages, EXPECTED, `cut after byte ${cut}: ${JSON.stringify(decoder.decode(chunks[0]))}`);
      return;
    }
  }
  t.pass(`all ${bytes.length - 1} two-chunk cuts parse the same`);
  const oneByteChunks = STREAM.split('');
  t.same(await parse(oneByteChunks), EXPECTED, 'one character per chunk');
});
