/**
 * Ignition parses unit files with go-systemd's lexer (unit/deserialize.go). Before each lexer step,
 * when its bufio.Reader (4096 bytes) holds 2048 bytes or more, it looks for `\r` or `\n` in the next
 * 2048 and refuses the unit ("line too long") if there is none. Which long lines it looks at depends
 * on where the steps fall and when the buffer refills: a long line late in a unit is often never
 * looked at, and Ignition (and systemd, which reads lines up to 1 MiB) accepts it. So the lexer and
 * its buffer are simulated here, step for step, rather than every long line refused.
 */

const LINE_MAX = 2048;
const BUFFER_SIZE = 4096;
const UTF_MAX = 4;

/** A bufio.Reader over `bytes`, reduced to the positions that decide what Buffered() returns. */
class BufferedReader {
  /** Bytes consumed. */
  position = 0;
  /** Bytes read into the buffer: it holds [position, end). */
  private end = 0;
  /** bufio's b.err: a fill found nothing left. */
  private exhausted = false;
  private lastRuneSize = 0;

  constructor(readonly bytes: Buffer) {}

  buffered(): number {
    return this.end - this.position;
  }

  /** Slides the buffer and reads once: a bytes.Reader fills all the room there is. */
  private fill(): void {
    if (this.end >= this.bytes.length) this.exhausted = true;
    else this.end = Math.min(this.bytes.length, this.position + BUFFER_SIZE);
  }

  /** The next rune's first byte, or undefined at the end (bufio.ReadRune). */
  readRune(): number | undefined {
    while (
      this.buffered() < UTF_MAX &&
      !isFullRune(this.bytes.subarray(this.position, this.end)) &&
      !this.exhausted &&
      this.buffered() < BUFFER_SIZE
    ) {
      this.fill();
    }
    if (this.buffered() === 0) return undefined;
    const first = this.bytes[this.position] ?? 0;
    this.lastRuneSize = Math.min(runeLength(first), this.buffered());
    this.position += this.lastRuneSize;
    return first;
  }

  unreadRune(): void {
    this.position -= this.lastRuneSize;
  }

  /** Consumes through `delimiter` or to the end; the bytes read, and whether the delimiter ended them (bufio.ReadBytes). */
  readBytes(delimiter: number): { bytes: Buffer; found: boolean } {
    const start = this.position;
    for (;;) {
      const at = this.bytes.subarray(this.position, this.end).indexOf(delimiter);
      if (at >= 0) {
        this.position += at + 1;
        return { bytes: this.bytes.subarray(start, this.position), found: true };
      }
      if (this.exhausted) {
        this.position = this.end;
        return { bytes: this.bytes.subarray(start, this.position), found: false };
      }
      // A full buffer is handed over as a fragment (ErrBufferFull) and the search goes on.
      if (this.buffered() >= BUFFER_SIZE) this.position = this.end;
      else this.fill();
    }
  }

  /** Peek(2048) holds no line end: only asked when 2048 bytes or more are buffered. */
  nextLineTooLong(): boolean {
    if (this.buffered() < LINE_MAX) return false;
    const window = this.bytes.subarray(this.position, this.position + LINE_MAX);
    return !window.includes(0x0a) && !window.includes(0x0d);
  }
}

function runeLength(first: number): number {
  if (first < 0xc0) return 1;
  if (first < 0xe0) return 2;
  if (first < 0xf0) return 3;
  return first < 0xf8 ? 4 : 1;
}

/** utf8.FullRune: the bytes start with a whole rune (or one that can never be whole: an invalid byte). */
function isFullRune(bytes: Buffer): boolean {
  if (bytes.length === 0) return false;
  return bytes.length >= runeLength(bytes[0] ?? 0);
}

type Step = () => Step | undefined;

const isComment = (byte: number) => byte === 0x23 || byte === 0x3b;
/** unicode.IsSpace for the bytes that can start a rune (multi-byte spaces are too rare to matter here). */
const isSpace = (byte: number) => byte === 0x20 || (byte >= 0x09 && byte <= 0x0d);

/** Whether Ignition refuses this unit text as having a line too long (see above). */
export function unitLineTooLong(text: string): boolean {
  const reader = new BufferedReader(Buffer.from(text, 'utf8'));
  const toEndOfLine = () => {
    // As toEOL: `\r` trimmed first, so only a line ending without `\n` loses it.
    const line = reader.readBytes(0x0a).bytes.toString('latin1');
    return line.replace(/\r$/, '').replace(/\n$/, '');
  };
  const ignoreLine =
    (next: Step): Step =>
    () => {
      while (toEndOfLine().replace(/ $/, '').endsWith('\\'));
      return next;
    };
  const sectionOrOption: Step = () => {
    const rune = reader.readRune();
    if (rune === undefined) return undefined;
    if (isSpace(rune)) return sectionOrOption;
    if (rune === 0x5b) return sectionName;
    if (isComment(rune)) return ignoreLine(sectionOrOption);
    reader.unreadRune();
    return optionName;
  };
  const nextSection: Step = () => {
    const rune = reader.readRune();
    if (rune === undefined) return undefined;
    if (rune === 0x5b) return sectionName;
    if (isComment(rune)) return ignoreLine(nextSection);
    return nextSection;
  };
  // The lexer's other errors (no `]`, garbage after a section, a newline in an option name) end it
  // here; checkUnitContents reports them in its own words.
  const sectionName: Step = () => (reader.readBytes(0x5d).found ? sectionSuffix : undefined);
  const sectionSuffix: Step = () => (toEndOfLine().trim() === '' ? sectionOrOption : undefined);
  const optionName: Step = () => {
    for (;;) {
      const rune = reader.readRune();
      if (rune === undefined || rune === 0x0a || rune === 0x0d) return undefined;
      if (rune === 0x3d) return optionValue;
    }
  };
  const optionValue: Step = () => {
    while (toEndOfLine().includes('\\'));
    return sectionOrOption;
  };

  // Every step reads at least one byte, so this ends within the text's length plus one.
  for (let step: Step | undefined = nextSection; step; step = step()) {
    if (reader.nextLineTooLong()) return true;
  }
  return false;
}
