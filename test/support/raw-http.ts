// Raw HTTP/1.1 over a plain socket, for requests no HTTP client library would
// send: trickled headers, bodies that are declared and never sent, pipelining.
import { connect } from 'node:net';

export interface RawResponse {
  status: number;
  /** The header block, lowercased. */
  headers: string;
  body: string;
}

export interface RawAnswer {
  /** Every response read off the connection, in order. */
  responses: RawResponse[];
  /** The first response's fields, for single-request exchanges. */
  status: number;
  headers: string;
  body: string;
  /** Whether the server closed the connection before `waitMs` ran out. */
  closed: boolean;
  ms: number;
}

/** Splits what a server wrote into responses, using each one's Content-Length. */
export function parseResponses(text: string): RawResponse[] {
  const responses: RawResponse[] = [];
  let rest = text;
  // Bounded: every pass consumes a header block or stops.
  for (let i = 0; i < 1000 && rest.startsWith('HTTP/'); i++) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const head = rest.slice(0, end);
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    const body = rest.slice(end + 4, end + 4 + length);
    responses.push({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), headers: head.toLowerCase(), body });
    rest = rest.slice(end + 4 + length);
  }
  return responses;
}

/**
 * Writes `parts` to a fresh socket (pausing `gapMs` between them) and reads
 * until the server closes it, `expect` responses have arrived, or `waitMs` passes.
 */
export function rawExchange(port: number, parts: string[], options: { gapMs?: number; waitMs?: number; expect?: number; localAddress?: string } = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect({ port, host: '127.0.0.1', ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    let text = '';
    let closed = false;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const responses = parseResponses(text);
      const first = responses[0] ?? { status: 0, headers: text.split('\r\n\r\n')[0]?.toLowerCase() ?? '', body: '' };
      resolve({ responses, ...first, closed, ms: Date.now() - started });
      socket.destroy();
    };
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (options.expect !== undefined && parseResponses(text).length >= options.expect) finish();
    });
    socket.once('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? undefined : reject(err)));
    socket.once('close', () => {
      closed = true;
      finish();
    });
    const timer = setTimeout(finish, options.waitMs ?? 10_000);
    void (async () => {
      for (const part of parts) {
        if (socket.destroyed) return;
        socket.write(part);
        if (options.gapMs) await new Promise((r) => setTimeout(r, options.gapMs));
      }
    })();
  });
}
