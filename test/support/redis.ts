// A real Redis for tests: Debian's redis-server on 127.0.0.1, no persistence,
// its working directory and log in a temp dir, stopped (or killed, to play an
// outage) by its PID. Tests talk to it over a raw RESP socket, so they do not
// depend on the npm client the code under test uses.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './registry.js';
import { onPath } from './requirements.js';

/** One decoded RESP reply: simple strings and bulk strings as strings, nil as null. */
export type RedisReply = string | number | null | RedisReply[];

/** An error reply (`-ERR …`) from the server. */
export class RedisReplyError extends Error {
  override name = 'RedisReplyError';
}

export interface RedisServer {
  /** redis://127.0.0.1:<port>/0 */
  url: string;
  port: number;
  /** The PID of the redis-server running now (or last run). */
  readonly pid: number;
  /** Temp dir holding redis.log; removed by stop(). */
  dir: string;
  /** Sends one command and returns its decoded reply; an error reply rejects. */
  command(...args: string[]): Promise<RedisReply>;
  /** `KEYS pattern`, as strings. */
  keys(pattern?: string): Promise<string[]>;
  /** SIGKILL, as a crash: the port and the dir stay, so start() brings it back. */
  kill(): Promise<void>;
  /** Starts it again on the same port (empty: nothing is persisted). A no-op while it runs. */
  start(): Promise<void>;
  /** SIGTERM (SIGKILL after 5 s), then removes the dir. Idempotent. */
  stop(): Promise<void>;
}

/** Why redis-server cannot run here, or undefined. */
export async function redisUnavailableReason(): Promise<string | undefined> {
  const binary = await onPath(['redis-server']);
  if (!binary) return 'redis-server not installed (apt-get install redis-server)';
  const probe = spawnSync(binary, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  return probe.status === 0 ? undefined : `redis-server --version failed (${probe.status}): ${probe.stderr || probe.error?.message}`;
}

function encode(args: readonly string[]): Buffer {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) parts.push(`$${Buffer.byteLength(a)}\r\n${a}\r\n`);
  return Buffer.from(parts.join(''));
}

type Parsed = { value: RedisReply | RedisReplyError; next: number } | undefined;

/** Decodes one reply at `at`, or undefined while `buf` holds only part of it. */
function parse(buf: Buffer, at: number): Parsed {
  const eol = buf.indexOf('\r\n', at);
  if (eol < 0) return undefined;
  const line = buf.toString('utf8', at + 1, eol);
  const next = eol + 2;
  switch (String.fromCharCode(buf[at]!)) {
    case '+':
      return { value: line, next };
    case '-':
      return { value: new RedisReplyError(line), next };
    case ':':
      return { value: Number(line), next };
    case '$': {
      const len = Number(line);
      if (len < 0) return { value: null, next };
      if (buf.length < next + len + 2) return undefined;
      return { value: buf.toString('utf8', next, next + len), next: next + len + 2 };
    }
    case '*': {
      const count = Number(line);
      if (count < 0) return { value: null, next };
      const items: RedisReply[] = [];
      let pos = next;
      for (let i = 0; i < count; i++) {
        const item = parse(buf, pos);
        if (!item) return undefined;
        // An error inside an array (as EXEC returns) is kept as its message.
        items.push(item.value instanceof RedisReplyError ? item.value.message : item.value);
        pos = item.next;
      }
      return { value: items, next: pos };
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(String.fromCharCode(buf[at]!))}`);
  }
}

/** One command on a fresh connection, bounded by `timeoutMs`. */
export async function redisCommand(port: number, args: readonly string[], timeoutMs = 5_000): Promise<RedisReply> {
  return await new Promise<RedisReply>((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    let settled = false;
    const finish = (err: Error | undefined, value?: RedisReply): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      if (err) reject(err);
      else resolve(value ?? null);
    };
    socket.setTimeout(timeoutMs, () => finish(new Error(`redis ${args[0] ?? ''}: no reply within ${timeoutMs} ms`)));
    socket.once('error', (err) => finish(err));
    socket.once('close', () => finish(new Error(`redis ${args[0] ?? ''}: connection closed before a full reply`)));
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      let parsed: Parsed;
      try {
        parsed = parse(buf, 0);
      } catch (err) {
        finish(err as Error);
        return;
      }
      if (!parsed) return;
      if (parsed.value instanceof RedisReplyError) finish(parsed.value);
      else finish(undefined, parsed.value);
    });
    socket.write(encode(args));
  });
}

export async function startRedis(options: { port?: number } = {}): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-redis-'));
  const port = options.port ?? (await freePort());
  const logFile = join(dir, 'redis.log');
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const running = (): boolean => child !== undefined && child.exitCode === null && child.signalCode === null;
  const logTail = (): string => (existsSync(logFile) ? readFileSync(logFile, 'utf8').slice(-3000) : '');

  const halt = async (signal: NodeJS.Signals): Promise<void> => {
    if (!child || !running() || child.pid === undefined) return;
    const pid = child.pid;
    process.kill(pid, signal);
    const timer = signal === 'SIGKILL' ? undefined : setTimeout(() => running() && process.kill(pid, 'SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  };

  const start = async (): Promise<void> => {
    if (running()) return;
    mkdirSync(dir, { recursive: true }); // stop() removed it; a restart after stop() gets a fresh one
    // The server writes its log to stdout; give it the file itself, so nothing here must drain a pipe.
    const fd = openSync(logFile, 'a');
    const proc = spawn('redis-server', args, { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    child = proc;
    let spawnError: Error | undefined;
    exited = new Promise<void>((resolve) => {
      proc.once('exit', () => resolve());
      proc.once('error', (err) => {
        spawnError = err;
        resolve();
      });
    });
    // React to an early exit (port taken, bad argument) instead of polling it out.
    let gone = false;
    void exited.then(() => (gone = true));
    // Ready when the server answering is this one: a PONG alone could come from another server holding the port.
    const ours = new RegExp(`^process_id:${proc.pid}\\r?$`, 'm');
    for (let i = 0; i < 100 && !gone; i++) {
      const info = await redisCommand(port, ['INFO', 'server'], 1_000).catch(() => undefined);
      if (typeof info === 'string' && ours.test(info)) return;
      await Promise.race([new Promise((r) => setTimeout(r, 50)), exited]);
    }
    const why = gone ? `exited (${spawnError?.message ?? proc.exitCode ?? proc.signalCode})` : 'did not answer INFO within 5 s';
    await halt('SIGKILL');
    throw new Error(`redis-server on port ${port} ${why}\n${logTail()}`);
  };

  try {
    await start();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  const command = (...cmd: string[]): Promise<RedisReply> => redisCommand(port, cmd);
  return {
    url: `redis://127.0.0.1:${port}/0`,
    port,
    get pid(): number {
      return child?.pid ?? -1;
    },
    dir,
    command,
    async keys(pattern = '*') {
      const reply = await command('KEYS', pattern);
      if (!Array.isArray(reply)) throw new Error(`KEYS returned ${JSON.stringify(reply)}`);
      return reply.map(String);
    },
    kill: () => halt('SIGKILL'),
    start,
    async stop() {
      await halt('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
