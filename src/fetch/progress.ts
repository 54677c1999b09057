import type { DownloadEvents, DownloadOutcome } from './download.js';

/**
 * How `rackboot fetch` tells the operator what it does: a redrawn progress bar on a terminal,
 * plain lines (start, retry, result) otherwise, so logs and CI output stay readable.
 */
export interface FetchReporter {
  line(message: string): void;
  /** Events for one download, labelled e.g. `x86_64 rootfs`. */
  download(label: string): DownloadEvents & {
    end(outcome: DownloadOutcome, bytes: number, note: string): void;
    /** The download failed: take the bar off the line so the error message starts clean. */
    abandon(): void;
  };
}

export interface ReporterOutput {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

const REDRAW_INTERVAL_MS = 100;

export function createReporter(out: ReporterOutput, now: () => number = Date.now): FetchReporter {
  const tty = out.isTTY === true;
  return {
    line: (message) => out.write(`${message}\n`),
    download(label) {
      let startedAt = now();
      let startBytes = 0;
      let total: number | undefined;
      let lastDraw = 0;
      let drawn = false;
      const clear = () => {
        if (drawn) out.write('\r\x1b[K');
        drawn = false;
      };
      return {
        start(from, size) {
          startedAt = now();
          startBytes = from;
          total = size;
          if (!tty) out.write(`${label}: ${from > 0 ? `resuming at ${formatBytes(from)}` : 'downloading'}\n`);
        },
        progress(bytes) {
          const time = now();
          if (!tty || time - lastDraw < REDRAW_INTERVAL_MS) return;
          lastDraw = time;
          const rate = ((bytes - startBytes) * 1000) / Math.max(time - startedAt, 1);
          out.write(`\r\x1b[K${progressLine(label, bytes, total, rate, out.columns ?? 80)}`);
          drawn = true;
        },
        retry(error, delayMs) {
          clear();
          out.write(`${label}: ${error.message}; retrying in ${delayMs / 1000}s\n`);
        },
        abandon: clear,
        end(outcome, bytes, note) {
          clear();
          const verb = { present: 'already present', downloaded: 'downloaded', resumed: 'resumed' }[outcome];
          out.write(`${label}: ${verb}, ${formatBytes(bytes)}, ${note}\n`);
        },
      };
    },
  };
}

/** One terminal line: `label [#####-----]  45%  12.3 MiB/27.0 MiB  5.2 MiB/s`, fitted to `columns`. */
export function progressLine(
  label: string,
  bytes: number,
  total: number | undefined,
  bytesPerSecond: number,
  columns: number,
): string {
  const amounts = total
    ? `${formatBytes(bytes)}/${formatBytes(total)}  ${formatBytes(bytesPerSecond)}/s`
    : `${formatBytes(bytes)}  ${formatBytes(bytesPerSecond)}/s`;
  if (!total) return `${label}  ${amounts}`.slice(0, columns - 1);
  const fraction = Math.min(bytes / total, 1);
  const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
  const barWidth = Math.max(columns - label.length - amounts.length - percent.length - 7, 0);
  const filled = Math.round(fraction * barWidth);
  const bar = barWidth > 0 ? ` [${'#'.repeat(filled)}${'-'.repeat(barWidth - filled)}]` : '';
  return `${label}${bar} ${percent}  ${amounts}`.slice(0, columns - 1);
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${Math.round(value)} ${units[unit]}` : `${value.toFixed(1)} ${units[unit]}`;
}
