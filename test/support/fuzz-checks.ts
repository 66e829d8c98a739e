// The rules every fuzz response must keep, and how a violation is described.
import { createHash } from 'node:crypto';
import type { FuzzResponse } from './fuzz-client.js';
import type { FuzzRequest } from './fuzz-requests.js';
import { codesOutsideSpec } from './spec-errors.js';

export interface Violation {
  req: FuzzRequest;
  reason: string;
  status?: number;
  reqId?: string;
}

/** A 502/503/504, judged after the run against what the upstream really answered. */
export interface GatewayError {
  req: FuzzRequest;
  status: number;
  body: string;
  reqId: string | undefined;
}

export interface CheckContext {
  /** Canary file contents: none may appear in a response. */
  tokens: readonly string[];
  /** Seeded manifests and blobs by digest. */
  content: ReadonlyMap<string, Buffer>;
  gatewayErrors: GatewayError[];
}

export const header = (r: FuzzResponse, name: string): string | undefined => {
  const v = r.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
};

/** The path the server routes on: origin-form, or the path of an absolute-form target. */
export const routePath = (req: FuzzRequest): string => req.path.replace(/^https?:\/\/[^/]*/, '').split('?')[0]!;

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function errorJson(res: FuzzResponse, where: string): string[] {
  try {
    const parsed = JSON.parse(res.body.toString('utf8')) as { errors?: { code?: unknown; message?: unknown }[] };
    const ok = Array.isArray(parsed.errors) && parsed.errors.length > 0 && parsed.errors.every((e) => typeof e.code === 'string' && typeof e.message === 'string');
    const broken: string[] = [];
    if (!ok) broken.push(`4xx body ${where} is JSON but not {errors:[{code,message}]}: ${res.body.toString('utf8').slice(0, 200)}`);
    const outside = codesOutsideSpec(res.body);
    if (outside.length > 0) broken.push(`error codes ${where} outside the distribution-spec's table: ${outside.join(', ')}`);
    if (!/application\/json/.test(header(res, 'content-type') ?? '')) broken.push(`4xx error JSON ${where} served as ${header(res, 'content-type')}`);
    return broken;
  } catch {
    return [`${res.status} body ${where} is not JSON: ${JSON.stringify(res.body.subarray(0, 120).toString('latin1'))}`];
  }
}

/** Every rule a single response must keep; returns what it broke. Gateway errors are set aside for later. */
export function checkResponse(req: FuzzRequest, res: FuzzResponse, ctx: CheckContext): string[] {
  const broken: string[] = [];
  const path = routePath(req);
  if (res.status === 502 || res.status === 503 || res.status === 504) {
    ctx.gatewayErrors.push({ req, status: res.status, body: res.body.toString('utf8').slice(0, 300), reqId: header(res, 'x-request-id') });
  } else if (res.status >= 500 && !(res.status === 508 && req.loops)) {
    broken.push(`status ${res.status} (no 5xx from input; 508 only for a Via naming this mirror)`);
  }
  // The brief's rule is for /v2; the README promises the same error JSON elsewhere (the
  // admin API, the dashboard's 404). Bodiless errors, such as Node's own, pass.
  if (res.status >= 400 && res.status < 500 && res.body.length > 0) {
    broken.push(...errorJson(res, path === '/v2' || path.startsWith('/v2/') ? 'on /v2' : 'outside /v2'));
  }
  const text = Buffer.concat([res.body, Buffer.from(JSON.stringify(res.headers), 'latin1')]);
  if (ctx.tokens.some((token) => text.includes(token))) broken.push('response contains canary file content');
  const digest = header(res, 'docker-content-digest');
  const known = digest ? ctx.content.get(digest) : undefined;
  const route = /\/(manifests|blobs)\/([^/?]+)/.exec(path);
  if (req.method === 'GET' && route && digest && res.status === 200) {
    if (digest.startsWith('sha256:') && sha256(res.body) !== digest) broken.push(`200 body does not hash to its Docker-Content-Digest ${digest}`);
    if (known && !known.equals(res.body)) broken.push('200 body differs from the seeded content');
  }
  if (req.method === 'GET' && route?.[1] === 'blobs' && res.status === 206) {
    const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(header(res, 'content-range') ?? '');
    if (!m) broken.push(`206 with Content-Range ${header(res, 'content-range')}`);
    else if (known && (Number(m[3]) !== known.length || !known.subarray(Number(m[1]), Number(m[2]) + 1).equals(res.body))) broken.push(`206 body is not bytes ${m[1]}-${m[2]} of the blob`);
  }
  const asked = route?.[2]!.replace(/%3a/gi, ':');
  if (asked?.includes(':') && (res.status === 200 || res.status === 206) && digest !== asked) broken.push(`asked for ${asked} but served ${digest}`);
  if (res.status === 416 && !/^bytes \*\/\d+$/.test(header(res, 'content-range') ?? '')) broken.push(`416 with Content-Range ${header(res, 'content-range')}`);
  if (req.method === 'HEAD' && res.body.length > 0) broken.push('HEAD response has a body');
  if (req.expect) {
    if (res.status !== req.expect.status) broken.push(`expected ${req.expect.status}, got ${res.status}: ${res.body.toString('utf8').slice(0, 200)}`);
    else if (req.expect.digest && digest !== req.expect.digest) broken.push(`expected digest ${req.expect.digest}, got ${digest}`);
  }
  return broken;
}

/**
 * A 502/503/504 is the right answer only when the upstream really failed this
 * request: the double must have answered 5xx on the exact upstream path (the
 * repository as the mirror resolved it, from its log line for the request).
 * A circuit opened by earlier input, a digest "mismatch" or any other verdict
 * of the mirror's own on a healthy upstream is a violation.
 */
export function settleGatewayErrors(errors: readonly GatewayError[], upstreamFailures: ReadonlySet<string>, mirrorLog: string): { passedOn: number; violations: Violation[] } {
  const repoOf = new Map<string, string>();
  for (const line of mirrorLog.split('\n')) {
    const m = /"reqId":"([^"]+)".*?"repo":"([^"]+)"/.exec(line);
    if (m) repoOf.set(m[1]!, m[2]!);
  }
  let passedOn = 0;
  const violations: Violation[] = [];
  for (const g of errors) {
    const route = /\/(manifests|blobs|tags|referrers)\/([^/?]+)$/.exec(routePath(g.req));
    const repo = g.reqId ? repoOf.get(g.reqId) : undefined;
    const upstreamPath = route && repo ? `/v2/${repo}/${route[1]}/${route[2]!.replace(/%3a/gi, ':')}` : undefined;
    if (upstreamPath && upstreamFailures.has(upstreamPath)) {
      passedOn++;
      continue;
    }
    const body = g.body.replace(/[0-9a-f]{64}/g, '<hex>').replace(/\d+\.\d+\.\d+\.\d+:\d+/g, '<addr>').replace(/until [^"]*/, 'until …');
    violations.push({ req: g.req, reason: `status ${g.status} with no upstream 5xx behind it${body ? `: ${body}` : ' (HEAD)'}`, status: g.status, reqId: g.reqId });
  }
  return { passedOn, violations };
}

export function describeRequest(req: FuzzRequest): string {
  const cut = (s: string, n = 160): string => (s.length > n ? `${s.slice(0, n)}…(${s.length} chars)` : s);
  if (req.raw) return `#${req.index} [raw] ${JSON.stringify(cut(req.raw.bytes.toString('latin1'), 200))}`;
  const headers = Object.entries(req.headers).map(([k, v]) => `${k}: ${cut(JSON.stringify(v), 80)}`).join('; ');
  return `#${req.index} [${req.category}] ${req.method} ${cut(req.path)}${headers ? ` {${headers}}` : ''}${req.body !== undefined ? ` body=${cut(JSON.stringify(req.body), 80)}` : ''}`;
}

/** Violations grouped by reason, a few examples each, with the mirror's log line for the request. */
export function violationReport(violations: readonly Violation[], mirrorLog: string): string {
  const logs = mirrorLog.split('\n');
  const byReason = new Map<string, Violation[]>();
  for (const v of violations) {
    const key = v.reason.replace(/[0-9a-f]{64}/g, '<hex>').slice(0, 120);
    byReason.set(key, [...(byReason.get(key) ?? []), v]);
  }
  return [...byReason.entries()].slice(0, 25).map(([reason, list]) => {
    const examples = list.slice(0, 3).map((v) => {
      const line = v.reqId ? logs.find((l) => l.includes(v.reqId!)) : undefined;
      return `    ${describeRequest(v.req)}${line ? `\n      log: ${line.slice(0, 400)}` : ''}`;
    });
    return `  ${list.length}× ${reason}\n${examples.join('\n')}`;
  }).join('\n');
}
