// A real forward proxy on loopback (Debian's tinyproxy) for the egress tests:
// minimal config in a temp dir, run in the foreground, stopped by its PID.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './registry.js';

export interface Tinyproxy {
  /** http://127.0.0.1:<port>, without credentials. */
  url: string;
  port: number;
  pid: number;
  /** The targets of the CONNECT requests it logged so far, as host:port. */
  tunnels(): string[];
  log(): string;
  stop(): Promise<void>;
}

/** Whether something accepts connections on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export async function startTinyproxy(options: { basicAuth?: { username: string; password: string } } = {}): Promise<Tinyproxy> {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-tinyproxy-'));
  const port = await freePort();
  const logFile = join(dir, 'tinyproxy.log');
  // No ConnectPort line: CONNECT may reach any port (the test upstreams are not on 443).
  const lines = [
    `Port ${port}`,
    'Listen 127.0.0.1',
    'Timeout 30',
    'Allow 127.0.0.1',
    `LogFile "${logFile}"`,
    'LogLevel Connect',
    `PidFile "${join(dir, 'tinyproxy.pid')}"`,
    'MaxClients 100',
  ];
  if (options.basicAuth) lines.push(`BasicAuth ${options.basicAuth.username} ${options.basicAuth.password}`);
  writeFileSync(join(dir, 'tinyproxy.conf'), lines.join('\n') + '\n');
  const child = spawn('tinyproxy', ['-d', '-c', join(dir, 'tinyproxy.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const log = (): string => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      process.kill(child.pid, 'SIGTERM');
      const timer = setTimeout(() => child.exitCode === null && child.pid !== undefined && process.kill(child.pid, 'SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline && child.exitCode === null) {
    if (await listening(port)) {
      return {
        url: `http://127.0.0.1:${port}`,
        port,
        pid: child.pid!,
        tunnels: () => [...log().matchAll(/Request \(file descriptor \d+\): CONNECT (\S+) HTTP/g)].map((m) => m[1]!),
        log,
        stop,
      };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const text = `${stderr}\n${log()}`;
  await stop();
  throw new Error(`tinyproxy did not start: ${text.slice(-2000)}`);
}
