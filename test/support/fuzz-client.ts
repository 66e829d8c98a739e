// Sends fuzz requests: through a keep-alive undici Pool, or verbatim on a raw
// socket for what no client library will send, and parses what comes back.
import { connect } from 'node:net';
import type { Pool } from 'undici';
import type { FuzzRequest } from './fuzz-requests.js';

export interface FuzzResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export interface FuzzOutcome {
  responses: FuzzResponse[];
  /** A transport error (no response, or a broken one). */
  error?: string;
  /** undici refused to send the request at all: a generator problem, not a server answer. */
  notSent?: boolean;
  ms: number;
}

/** Largest body read; bigger is itself a finding (the seeded blobs are about 1 MiB at most). */
const MAX_BODY = 8 * 1024 * 1024;

export async function sendPooled(pool: Pool, req: FuzzRequest, timeoutMs: number): Promise<FuzzOutcome> {
  const started = performance.now();
  let res;
  try {
    res = await pool.request({
      path: req.path,
      method: req.method,
      headers: req.headers,
      ...(req.body !== undefined ? { body: req.body } : {}),
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
  } catch (err) {
    const code = (err as { code?: string }).code ?? (err as Error).name;
    return { responses: [], error: `${code}: ${(err as Error).message}`, notSent: code === 'UND_ERR_INVALID_ARG', ms: performance.now() - started };
  }
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of res.body) {
      size += (chunk as Buffer).length;
      if (size > MAX_BODY) {
        res.body.destroy();
        return { responses: [], error: `body over ${MAX_BODY} bytes`, ms: performance.now() - started };
      }
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    const response = { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) };
    return { responses: [response], error: `body: ${(err as { code?: string }).code ?? ''} ${(err as Error).message}`, ms: performance.now() - started };
  }
  return { responses: [{ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }], ms: performance.now() - started };
}

/**
 * Writes the bytes on a fresh connection and reads until the server closes it.
 * Requests that need no answer are half-closed at once, so the server sees EOF.
 */
export function sendRaw(port: number, req: FuzzRequest, timeoutMs: number): Promise<FuzzOutcome> {
  const raw = req.raw!;
  const started = performance.now();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: string | undefined;
    let size = 0;
    const socket = connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      error = raw.expectResponse ? `no close within ${timeoutMs} ms` : undefined;
      socket.destroy();
    }, raw.expectResponse ? timeoutMs : Math.min(timeoutMs, 1_000));
    socket.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ECONNRESET' && err.code !== 'EPIPE') error = `${err.code ?? ''} ${err.message}`;
    });
    socket.on('close', () => {
      clearTimeout(timer);
      const bytes = Buffer.concat(chunks);
      let responses: FuzzResponse[] = [];
      try {
        responses = parseResponses(bytes, req.chain?.map((l) => l.method));
      } catch (err) {
        error = `unparsable response: ${(err as Error).message}: ${JSON.stringify(bytes.subarray(0, 200).toString('latin1'))}`;
      }
      if (raw.expectResponse && responses.length === 0 && !error) error = 'closed without a response';
      resolve({ responses, ...(error ? { error } : {}), ms: performance.now() - started });
    });
    socket.write(raw.bytes, () => {
      if (!raw.expectResponse) socket.end();
    });
  });
}

/**
 * HTTP/1.1 responses one after another: Content-Length, chunked, or to the end.
 * `methods` are those of the requests answered, in order: a HEAD's answer has no body.
 */
export function parseResponses(bytes: Buffer, methods: readonly string[] = []): FuzzResponse[] {
  const out: FuzzResponse[] = [];
  let at = 0;
  for (let guard = 0; guard < 64 && at < bytes.length; guard++) {
    const end = bytes.indexOf('\r\n\r\n', at, 'latin1');
    if (end < 0) throw new Error('truncated head');
    const [statusLine, ...lines] = bytes.subarray(at, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '');
    if (!m) throw new Error(`bad status line ${JSON.stringify(statusLine)}`);
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    at = end + 4;
    let body: Buffer;
    if (methods[out.length] === 'HEAD') {
      body = Buffer.alloc(0);
    } else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      const parts: Buffer[] = [];
      for (let g = 0; g < 100_000; g++) {
        const lineEnd = bytes.indexOf('\r\n', at, 'latin1');
        if (lineEnd < 0) throw new Error('truncated chunk size');
        const n = parseInt(bytes.subarray(at, lineEnd).toString('latin1'), 16);
        if (!Number.isFinite(n)) throw new Error('bad chunk size');
        at = lineEnd + 2;
        if (n === 0) {
          at = bytes.indexOf('\r\n', at, 'latin1') + 2; // no trailers from Koa
          break;
        }
        parts.push(bytes.subarray(at, at + n));
        at += n + 2;
      }
      body = Buffer.concat(parts);
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      body = bytes.subarray(at, at + n);
      at += n;
    } else {
      body = bytes.subarray(at);
      at = bytes.length;
    }
    out.push({ status: Number(m[1]), headers, body });
  }
  return out;
}
