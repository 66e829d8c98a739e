// A real webhook receiver for notification tests: an HTTP server in its own
// child process on 127.0.0.1 (webhook-receiver-main.ts) that records every
// request to a JSON-lines file, fsynced before it answers. The records
// survive the receiver being stopped or killed, and a receiver restarted on
// the same port with the same file appends to them.
//
//   const rx = await startReceiver({ mode: 500 });
//   …configure an endpoint with url `${rx.url}/events`…
//   await rx.setMode(200);
//   await rx.waitForEvents('the pulls', (evs) => evs.length >= 3);
//   rx.events({ acknowledged: true });            // only what was answered 2xx
//   for (const r of rx.requests()) parseEnvelopeStrictly(r.body, r.path);
//   await rx.stop();
//
// Also here: readRecords/eventsOf (a record file without a process), signatureOf
// (the expected Stevedore-Signature-256), parseEnvelopeStrictly (distribution's format).
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { waitFor } from './wait.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const MAIN = fileURLToPath(new URL('./webhook-receiver-main.ts', import.meta.url));

/** How the receiver answers: a status code (200 by default, 500…), or 'hang' (record, never answer, keep the socket open). */
export type ReceiverMode = number | 'hang';

/** One request as the receiver recorded it (a line of the record file). */
export interface ReceivedRequest {
  method: string;
  /** Path and query, as sent. */
  path: string;
  /** Node's lower-cased headers. */
  headers: Record<string, string | string[] | undefined>;
  /** The raw body as UTF-8 text (what a signature is computed over). */
  body: string;
  /** ISO time the whole body had arrived. */
  receivedAt: string;
  /** What the receiver answered (or 'hang': nothing). */
  answer: ReceiverMode;
  /** The client's address:port. */
  remote: string;
}

/** An event as it came in the `{"events":[…]}` envelope (distribution's field names plus `stevedore`). */
export interface WireEvent {
  id: string;
  timestamp: string;
  action: string;
  target?: { mediaType?: string; digest?: string; size?: number; length?: number; repository?: string; url?: string; tag?: string };
  request?: { id?: string; addr?: string; host?: string; method?: string; useragent?: string };
  actor?: { name?: string };
  source?: { addr?: string; instanceID?: string };
  stevedore?: Record<string, unknown>;
}

/** Which recorded requests to look at. */
export interface RecordFilter {
  /** Only requests to this path (several endpoints can share one receiver under different paths). */
  path?: string;
  /** Only requests answered 2xx (the ones the sender may consider delivered). */
  acknowledged?: boolean;
}

export interface StartReceiverOptions {
  /** Port on 127.0.0.1; 0 (default) picks a free one. Reuse a stopped receiver's port to bring it "back". */
  port?: number;
  /**
   * JSON-lines file to append to. Pass one (e.g. the previous receiver's) to keep records
   * across restarts and after stop(); when omitted, a temp file is made and removed by stop()/kill().
   */
  recordFile?: string;
  /** Initial mode, 200 by default. */
  mode?: ReceiverMode;
}

export interface Receiver {
  /** http://127.0.0.1:<port> (add the endpoint path yourself). */
  url: string;
  port: number;
  pid: number;
  recordFile: string;
  /** Every recorded request so far, in arrival order (read from the file, so also after stop() when the file is kept). */
  requests(filter?: RecordFilter): ReceivedRequest[];
  /** Every event of every recorded body, in arrival order; repeats (retries) included. */
  events(filter?: RecordFilter): WireEvent[];
  /** Polls the record file (waitFor) until `check` holds for events(filter). */
  waitForEvents(what: string, check: (events: WireEvent[]) => boolean, timeoutMs?: number, filter?: RecordFilter): Promise<void>;
  /** Changes how later requests are answered (already hanging requests stay hung). */
  setMode(mode: ReceiverMode): Promise<void>;
  /** How many requests are hanging right now (hang mode, socket still open). */
  openRequests(): Promise<number>;
  /** SIGTERM by pid, awaits the exit. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL by pid, awaits the exit. Idempotent. */
  kill(): Promise<void>;
  /** Settles when the process exits. */
  exited: Promise<void>;
}

/** Parses a record file (missing file: no records). */
export function readRecords(recordFile: string, filter: RecordFilter = {}): ReceivedRequest[] {
  if (!existsSync(recordFile)) return [];
  return readFileSync(recordFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as ReceivedRequest)
    .filter((r) => filter.path === undefined || r.path === filter.path)
    .filter((r) => !filter.acknowledged || (typeof r.answer === 'number' && r.answer >= 200 && r.answer < 300));
}

/** The events of recorded requests, in arrival order (bodies that are not an envelope contribute none). */
export function eventsOf(requests: readonly ReceivedRequest[]): WireEvent[] {
  const out: WireEvent[] = [];
  for (const r of requests) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(r.body);
    } catch {
      continue;
    }
    const events = (parsed as { events?: unknown } | null)?.events;
    if (Array.isArray(events)) out.push(...(events as WireEvent[]));
  }
  return out;
}

/**
 * The first occurrence of each id, in arrival order, and how many repeats (at-least-once
 * duplicates) there were; fails (node:assert) when a repeat differs from the first by a byte.
 */
export function dedupeEvents(events: WireEvent[]): { unique: WireEvent[]; repeats: number } {
  const seen = new Map<string, string>();
  const unique: WireEvent[] = [];
  let repeats = 0;
  for (const e of events) {
    const text = JSON.stringify(e);
    const first = seen.get(e.id);
    if (first === undefined) {
      seen.set(e.id, text);
      unique.push(e);
    } else {
      assert.equal(text, first, `a repeat of ${e.id} is the same event, byte for byte`);
      repeats++;
    }
  }
  return { unique, repeats };
}

/** The Stevedore-Signature-256 value a body signed with `secret` carries: `sha256=<hex HMAC-SHA256>`. */
export function signatureOf(secret: string, body: string | Buffer): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

// distribution's Envelope and Event (notifications/event.go), field for field.
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const EVENT_FIELDS = new Set(['id', 'timestamp', 'action', 'target', 'request', 'actor', 'source', 'stevedore']);
const TARGET_FIELDS: Record<string, 'string' | 'number'> = { mediaType: 'string', digest: 'string', size: 'number', length: 'number', repository: 'string', url: 'string', tag: 'string' };
const REQUEST_FIELDS: Record<string, 'string'> = { id: 'string', addr: 'string', host: 'string', method: 'string', useragent: 'string' };
const ACTOR_FIELDS: Record<string, 'string'> = { name: 'string' };
const SOURCE_FIELDS: Record<string, 'string'> = { addr: 'string', instanceID: 'string' };

function strictObject(where: string, value: unknown, fields: Record<string, 'string' | 'number'>, required: readonly string[] = []): void {
  assert.ok(typeof value === 'object' && value !== null && !Array.isArray(value), `${where} is an object`);
  for (const [key, v] of Object.entries(value)) {
    const type = fields[key];
    assert.ok(type, `${where}.${key} is not a field distribution documents`);
    assert.equal(typeof v, type, `${where}.${key} is a ${type}`);
    if (type === 'number') assert.ok(Number.isSafeInteger(v) && (v as number) >= 0, `${where}.${key} is a non-negative integer`);
  }
  for (const key of required) assert.ok(key in value, `${where}.${key} is present`);
}

/**
 * Parses a body the way a distribution receiver would, failing (node:assert) on anything it does not
 * document: an envelope other than {"events":[…]}, an event field beyond distribution's (plus
 * `stevedore`), a field of the wrong type, a pull without its target fields. `where` names the body in messages.
 */
export function parseEnvelopeStrictly(body: string, where = 'body'): WireEvent[] {
  const parsed = JSON.parse(body) as unknown;
  assert.ok(typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed));
  assert.deepEqual(Object.keys(parsed), ['events'], 'the envelope is {"events":[…]}');
  const events = (parsed as { events: unknown }).events;
  assert.ok(Array.isArray(events) && events.length > 0);
  for (const [i, e] of events.entries()) {
    const at = `${where} event ${i}`;
    assert.ok(typeof e === 'object' && e !== null && !Array.isArray(e), `${at} is an object`);
    for (const key of Object.keys(e)) assert.ok(EVENT_FIELDS.has(key), `${at}: unknown field ${key}`);
    const ev = e as Record<string, unknown>;
    assert.equal(typeof ev.id, 'string');
    assert.equal(typeof ev.timestamp, 'string');
    assert.match(ev.timestamp as string, RFC3339);
    assert.equal(typeof ev.action, 'string');
    strictObject(`${at}.target`, ev.target, TARGET_FIELDS);
    if (ev.request !== undefined) strictObject(`${at}.request`, ev.request, REQUEST_FIELDS, ['id', 'addr', 'host', 'method', 'useragent']);
    strictObject(`${at}.actor`, ev.actor, ACTOR_FIELDS);
    strictObject(`${at}.source`, ev.source, SOURCE_FIELDS, ['addr', 'instanceID']);
    if (ev.stevedore !== undefined) assert.ok(typeof ev.stevedore === 'object' && ev.stevedore !== null && !Array.isArray(ev.stevedore), `${at}.stevedore is an object`);
    if (ev.action === 'pull') strictObject(`${at}.target`, ev.target, TARGET_FIELDS, ['mediaType', 'digest', 'size', 'length', 'repository', 'url']);
  }
  return events as WireEvent[];
}

/** Starts a receiver process and resolves once it listens. */
export async function startReceiver(options: StartReceiverOptions = {}): Promise<Receiver> {
  const ownDir = options.recordFile === undefined ? mkdtempSync(join(tmpdir(), 'stevedore-webhook-')) : undefined;
  const recordFile = options.recordFile ?? join(ownDir!, 'records.jsonl');
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, String(options.port ?? 0), recordFile, String(options.mode ?? 200)], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error('the webhook receiver did not start');
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`webhook receiver not listening within 20 s: ${stderr}`)), 20_000);
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const line = out.split('\n').find((l) => l.startsWith('{"listening"'));
      if (line) {
        clearTimeout(timer);
        resolve((JSON.parse(line) as { listening: number }).listening);
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`webhook receiver exited before listening (port ${options.port ?? 0}): ${stderr}`));
    });
  }).catch(async (err: unknown) => {
    if (child.exitCode === null && child.signalCode === null) process.kill(pid, 'SIGKILL');
    await exited;
    if (ownDir) rmSync(ownDir, { recursive: true, force: true });
    throw err;
  });
  const url = `http://127.0.0.1:${port}`;
  const end = async (signal: NodeJS.Signals): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      process.kill(pid, signal);
      const timer = setTimeout(() => child.exitCode === null && child.signalCode === null && process.kill(pid, 'SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    if (ownDir) rmSync(ownDir, { recursive: true, force: true });
  };
  const controlCall = async (body?: unknown): Promise<{ mode: ReceiverMode; open: number }> => {
    const res = await request(`${url}/_control`, {
      method: body === undefined ? 'GET' : 'PUT',
      body: body === undefined ? undefined : JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
    });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`receiver control answered ${res.statusCode}: ${text}`);
    return JSON.parse(text) as { mode: ReceiverMode; open: number };
  };
  const requests = (filter?: RecordFilter): ReceivedRequest[] => readRecords(recordFile, filter);
  const events = (filter?: RecordFilter): WireEvent[] => eventsOf(requests(filter));
  return {
    url,
    port,
    pid,
    recordFile,
    requests,
    events,
    waitForEvents: (what, check, timeoutMs = 20_000, filter) => waitFor(what, () => check(events(filter)), timeoutMs),
    async setMode(mode) {
      await controlCall({ mode });
    },
    async openRequests() {
      return (await controlCall()).open;
    },
    stop: () => end('SIGTERM'),
    kill: () => end('SIGKILL'),
    exited,
  };
}
