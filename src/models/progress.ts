// Pull progress for people: on a terminal one redrawn line (bar, bytes, speed, ETA); in a log or a
// pipe a plain line every 5 %.
import { formatBytes } from './format.ts';
import type { PullEvent } from './pull.ts';

export function progressPrinter(stream: NodeJS.WriteStream, isTty = stream.isTTY === true): (event: PullEvent) => void {
  let started = 0;
  let lastStep = -1;
  let lastDraw = 0;
  // Speed over the last few seconds, not since the start (a resumed pull starts with bytes already there).
  const samples: { at: number; bytes: number }[] = [];
  return (event) => {
    if (event.type === 'resolved') {
      started = Date.now();
      lastStep = -1;
      samples.length = 0;
      const have = event.files - event.fetch;
      stream.write(
        `${event.ref} from ${event.endpoint}: ${event.files} file${event.files === 1 ? '' : 's'}, ${formatBytes(event.bytes)}` +
          (event.fetch ? `${have ? ` (${have} already here)` : ''}; fetching ${formatBytes(event.fetchBytes)}\n` : '; all here already\n'),
      );
      return;
    }
    if (event.type === 'done') {
      if (isTty && lastStep >= 0) stream.write('\n');
      const seconds = (Date.now() - started) / 1000;
      stream.write(`${event.ref}: ${event.skipped ? 'up to date' : `done in ${seconds.toFixed(1)} s`} → ${event.path}\n`);
      return;
    }
    const now = Date.now();
    samples.push({ at: now, bytes: event.downloaded });
    while (samples.length > 2 && now - samples[0]!.at > 5000) samples.shift();
    const first = samples[0]!;
    const speed = now > first.at ? ((event.downloaded - first.bytes) * 1000) / (now - first.at) : 0;
    const fraction = event.total ? Math.min(1, event.downloaded / event.total) : 1;
    const eta = speed > 0 ? (event.total - event.downloaded) / speed : Number.POSITIVE_INFINITY;
    const text = `${formatBytes(event.downloaded)} / ${formatBytes(event.total)}  ${formatBytes(speed)}/s  ETA ${formatSeconds(eta)}`;
    if (isTty) {
      if (now - lastDraw < 100 && fraction < 1) return;
      lastDraw = now;
      lastStep = 0;
      const width = 30;
      const filled = Math.round(fraction * width);
      stream.write(`\r  [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}%  ${text}\x1b[K`);
      return;
    }
    const step = Math.floor(fraction * 20);
    if (step > lastStep) {
      lastStep = step;
      stream.write(`  ${event.ref}: ${step * 5}%  ${text}\n`);
    }
  };
}

function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--';
  if (seconds < 60) return `${Math.ceil(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(Math.ceil(seconds % 60)).padStart(2, '0')}s`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
}
