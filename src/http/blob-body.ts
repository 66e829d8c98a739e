import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';

/** A body whose chunks go back to it for reuse once written (the filesystem store's). */
interface RecyclingBody extends Readable {
  release(chunk: Buffer): void;
}

export function isRecycling(body: Readable): body is RecyclingBody {
  return typeof (body as Partial<RecyclingBody>).release === 'function';
}

/**
 * Writes a recycling body to the response with backpressure, handing each
 * chunk back once the socket has taken it (the write's callback), so that a
 * warm blob needs no new buffer per read. Koa's piping cannot say when a
 * chunk is free. The response's status and headers are set already.
 */
export function sendRecycling(res: ServerResponse, body: RecyclingBody): void {
  let blocked = false;
  const pump = (): void => {
    if (blocked) return;
    for (let chunk: Buffer | null = body.read() as Buffer | null; chunk !== null; chunk = body.read() as Buffer | null) {
      const written = chunk;
      const more = res.write(written, (err) => err || body.release(written));
      if (!more) {
        blocked = true;
        res.once('drain', () => {
          blocked = false;
          pump();
        });
        return;
      }
    }
  };
  body.on('readable', pump);
  body.once('end', () => res.end());
  body.once('error', (err) => res.destroy(err));
  // A client that goes away (or a response cut for stalling) closes the file.
  res.once('close', () => body.destroy());
}
