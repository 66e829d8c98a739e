// Small node:http helpers shared by the Docker Hub double and its CDN.
import type { IncomingMessage, OutgoingHttpHeaders, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      const addr = server.address();
      resolve(addr && typeof addr === 'object' ? addr.port : port);
    });
  });
}

export function trackSockets(server: Server): Set<Socket> {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  return sockets;
}

export async function closeServer(server: Server, sockets: Set<Socket>): Promise<void> {
  if (!server.listening) return;
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeAllConnections();
  for (const s of sockets) s.destroy();
  await closed;
}

export function sendJson(res: ServerResponse, status: number, body: string, headers: OutgoingHttpHeaders = {}): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

export function firstRangeStart(contentRange: string | undefined): { start: number; total: number | undefined } {
  const m = contentRange ? /bytes (\d+)-\d+\/(\d+|\*)/.exec(contentRange) : null;
  return { start: m?.[1] ? Number(m[1]) : 0, total: m?.[2] && m[2] !== '*' ? Number(m[2]) : undefined };
}

export async function readSmallBody(req: IncomingMessage, limit = 64 * 1024): Promise<string> {
  let data = '';
  for await (const chunk of req) {
    data += String(chunk);
    if (data.length > limit) throw new Error('body too large');
  }
  return data;
}
