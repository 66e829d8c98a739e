import cliProgress from 'cli-progress';
import { formatBytes } from './format.js';

export interface ProgressView {
  blobsTotal: number;
  blobsFetched: number;
  blobsSkipped: number;
  bytesTotal: number;
  bytesDone: number;
}

/** A progress bar on a terminal; plain progress lines otherwise (CI logs, pipes). */
export function createProgress(label: string, stream: NodeJS.WriteStream = process.stderr): { update(view: ProgressView): void; stop(): void } {
  if (stream.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: `${label} |{bar}| {percentage}% | {blobs} blobs | {bytes}`, stream, hideCursor: true, clearOnComplete: false },
      cliProgress.Presets.shades_classic,
    );
    bar.start(1, 0, { blobs: '0/0', bytes: '0 B' });
    return {
      update(view) {
        bar.setTotal(Math.max(1, view.bytesTotal));
        bar.update(view.bytesDone, { blobs: `${view.blobsFetched + view.blobsSkipped}/${view.blobsTotal}`, bytes: `${formatBytes(view.bytesDone)}/${formatBytes(view.bytesTotal)}` });
      },
      stop: () => bar.stop(),
    };
  }
  let last = '';
  return {
    update(view) {
      const line = `${label}: ${view.blobsFetched + view.blobsSkipped}/${view.blobsTotal} blobs (${view.blobsFetched} fetched, ${view.blobsSkipped} cached), ${formatBytes(view.bytesDone)}/${formatBytes(view.bytesTotal)}`;
      if (line !== last) stream.write(`${line}\n`);
      last = line;
    },
    stop: () => undefined,
  };
}
