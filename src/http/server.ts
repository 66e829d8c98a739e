import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type Koa from 'koa';
import type { ConnectionGuard } from './connection-guard.js';
import { headersTooLarge, malformedRequest, requestTimeout, tooManyRequests, type RegistryError } from '../oci/errors.js';

export interface ListenAddress {
  host: string;
  port: number;
}

export interface ServerLimits {
  headersTimeout: number;
  requestTimeout: number;
  keepAliveTimeout: number;
  maxConnections: number;
  maxConnectionsPerClient: number;
  maxHeaderSize: number;
  /** A TLS handshake must complete within this. */
  handshakeTimeout: number;
}

export interface TlsFiles {
  cert: string;
  key: string;
}

export function parseListen(listen: string): ListenAddress {
  const colon = listen.lastIndexOf(':');
  const host = listen.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  return { host: host || '0.0.0.0', port: Number(listen.slice(colon + 1)) };
}

/** How a process on this machine reaches a listener: a wildcard address becomes loopback. */
export function localUrl(listenAt: string, scheme: 'http' | 'https', port?: number): string {
  const address = parseListen(listenAt);
  const host = address.host === '0.0.0.0' ? '127.0.0.1' : address.host === '::' ? '::1' : address.host;
  return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port ?? address.port}`;
}

/** A request body up to this size is read and dropped after the response, keeping the connection. */
const DISCARDABLE_BODY = 64 * 1024;

/**
 * Whether the rest of the request body can be read past cheaply once the
 * response is sent (no body, or a small declared one), so the connection may
 * serve its next request.
 */
function bodyCanBeDiscarded(req: IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return false;
  const declared = req.headers['content-length'];
  return declared === undefined || Number(declared) <= DISCARDABLE_BODY;
}

/** Beyond the soft limit clients get a clear 429; this far beyond it, the kernel's backlog takes over. */
const HARD_LIMIT_SLACK = 256;
/** How often Node checks connections against the header and request timeouts. */
const TIMEOUT_CHECK_MS = 1_000;

function readTls(files: TlsFiles): { cert: Buffer; key: Buffer } {
  const read = (what: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`cannot read TLS ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  return { cert: read('certificate', files.cert), key: read('key', files.key) };
}

/** An error as a complete HTTP/1.1 response, for sockets Koa never sees. */
function rawResponse(error: RegistryError): string {
  const body = JSON.stringify(error.toJSON());
  const headers = Object.entries(error.headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  return `HTTP/1.1 ${error.status} ${error.message}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${headers}connection: close\r\n\r\n${body}`;
}

function sendError(res: ServerResponse, error: RegistryError): void {
  const body = JSON.stringify(error.toJSON());
  res.writeHead(error.status, { ...error.headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' });
  res.end(body);
}

/**
 * The HTTP(S) server: header and request timeouts against slowloris (downloads
 * themselves may take as long as they need), connection limits that answer
 * with an OCI error, and OCI errors for requests too broken for Koa to see.
 * All of a process's listeners share one `guard`, so the limits hold across them.
 */
export function createServer(app: Koa, limits: ServerLimits, guard: ConnectionGuard, tls?: TlsFiles): Server {
  const handle = app.callback();
  const refusals = new WeakMap<Socket, RegistryError>();
  const serverFull = tooManyRequests(1, `this mirror serves at most ${limits.maxConnections} connections at once; retry shortly`);
  const clientFull = tooManyRequests(1, `this mirror serves at most ${limits.maxConnectionsPerClient} connections from one client address at once; retry shortly`);
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const refused = refusals.get(req.socket);
    if (refused) return sendError(res, refused);
    if (!bodyCanBeDiscarded(req)) {
      // As Go's net/http and nginx do: answer, then close. Reading an unbounded body
      // nobody wants would take the next request on this connection for its bytes.
      res.shouldKeepAlive = false;
      res.setHeader('Connection', 'close');
    }
    void handle(req, res);
  };
  const options = {
    headersTimeout: limits.headersTimeout,
    requestTimeout: limits.requestTimeout,
    keepAliveTimeout: limits.keepAliveTimeout,
    maxHeaderSize: limits.maxHeaderSize,
    connectionsCheckingInterval: TIMEOUT_CHECK_MS,
  };
  const server: Server = tls
    ? createHttpsServer({ ...options, ...readTls(tls), handshakeTimeout: limits.handshakeTimeout }, onRequest)
    : createHttpServer(options, onRequest);
  server.maxConnections = limits.maxConnections + HARD_LIMIT_SLACK;
  const judge = (socket: Socket): void => {
    const admission = guard.admission(socket.remoteAddress);
    if (admission !== 'ok') refusals.set(socket, admission === 'server-full' ? serverFull : clientFull);
  };
  // Counted from the TCP accept, so connections still in their TLS handshake count too.
  server.on('connection', (socket: Socket) => {
    guard.track(socket);
    if (!tls) judge(socket);
  });
  if (tls) server.on('secureConnection', judge);
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // A failed or timed-out TLS handshake leaves no channel to answer on: an HTTP error written there would wait forever.
    if (err.code === 'ECONNRESET' || !socket.writable || isTlsFailure(err)) {
      socket.destroy();
      return;
    }
    const error =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? headersTooLarge(`request headers may take at most ${limits.maxHeaderSize} bytes`)
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? requestTimeout(`the request must arrive within ${limits.headersTimeout / 1000}s (headers) and ${limits.requestTimeout / 1000}s (whole request)`)
          : malformedRequest(err.code ?? 'parse error');
    socket.end(rawResponse(error));
  });
  return server;
}

function isTlsFailure(err: NodeJS.ErrnoException): boolean {
  return /^ERR_(?:TLS|SSL)_/.test(err.code ?? '') || 'library' in err;
}

/** Swaps in a re-read certificate and key; connections already open keep theirs. */
export function reloadTls(server: Server, tls: TlsFiles): void {
  (server as import('node:https').Server).setSecureContext(readTls(tls));
}

export async function listen(server: Server, address: ListenAddress): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(address.port, address.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export function boundPort(server: Server): number {
  return (server.address() as AddressInfo).port;
}
