// The webhook receiver's own process (started by webhook-receiver.ts, not by
// hand): an HTTP server on 127.0.0.1 that appends every request it gets to a
// JSON-lines record file, fsynced before it answers, so the records outlive
// the process and a restart on the same file continues them.
//
//   node --import tsx webhook-receiver-main.ts <port> <recordFile> <mode>
//
// <mode> is a status code ("200", "500") or "hang" (read the request, record
// it, never answer, keep the socket open). Requests under /_control are not
// recorded: GET /_control → {"mode", "open"}; PUT /_control with {"mode": …}
// changes the mode. Once listening it prints {"listening":<port>} on stdout.
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

type Mode = number | 'hang';

function parseMode(text: unknown): Mode {
  if (text === 'hang') return 'hang';
  const status = typeof text === 'number' ? text : Number(text);
  if (!Number.isInteger(status) || status < 200 || status > 599) throw new Error(`bad receiver mode ${String(text)}`);
  return status;
}

const [portArg, recordFile, modeArg] = process.argv.slice(2);
if (portArg === undefined || recordFile === undefined) throw new Error('usage: webhook-receiver-main.ts <port> <recordFile> [mode]');
let mode: Mode = parseMode(modeArg ?? '200');
const fd = openSync(recordFile, 'a');
/** Requests in hang mode whose sockets are still open. */
const hanging = new Set<ServerResponse>();

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
}

function control(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
  if (req.method === 'PUT') {
    try {
      mode = parseMode((JSON.parse(body.toString('utf8')) as { mode?: unknown }).mode);
    } catch (err) {
      res.writeHead(400, { 'content-type': 'text/plain' }).end(String(err));
      return;
    }
  }
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ mode, open: hanging.size }));
}

const server = createServer({ requestTimeout: 0, headersTimeout: 0, keepAliveTimeout: 60_000 }, (req, res) => {
  void readBody(req).then(
    (body) => {
      const path = req.url ?? '/';
      if (path === '/_control' || path.startsWith('/_control/') || path.startsWith('/_control?')) {
        control(req, res, body);
        return;
      }
      const answer = mode;
      const record = {
        method: req.method ?? '',
        path,
        headers: req.headers,
        body: body.toString('utf8'),
        receivedAt: new Date().toISOString(),
        answer,
        remote: `${req.socket.remoteAddress ?? ''}:${req.socket.remotePort ?? 0}`,
      };
      writeSync(fd, `${JSON.stringify(record)}\n`);
      fsyncSync(fd);
      if (answer === 'hang') {
        hanging.add(res);
        res.once('close', () => hanging.delete(res));
        return;
      }
      res.writeHead(answer, { 'content-type': 'text/plain' }).end(answer < 300 ? 'ok' : 'failing on purpose');
    },
    () => res.destroy(),
  );
});

server.once('error', (err) => {
  process.stderr.write(`webhook receiver: ${String(err)}\n`);
  process.exit(2);
});
server.listen(Number(portArg), '127.0.0.1', () => {
  const addr = server.address();
  const port = addr !== null && typeof addr === 'object' ? addr.port : 0;
  process.stdout.write(`${JSON.stringify({ listening: port })}\n`);
});

function shutdown(): void {
  // Every record is already on disk; hung sockets are simply dropped.
  server.closeAllConnections();
  server.close();
  closeSync(fd);
  process.exit(0);
}
process.once('SIGTERM', shutdown);
process.once('SIGINT', shutdown);
