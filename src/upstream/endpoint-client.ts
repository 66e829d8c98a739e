import type { Dispatcher } from 'undici';
import type { Logger } from '../log.js';
import { assertAllowedTarget, TargetAllowance } from './address-guard.js';
import { VIA_HEADER } from '../oci/headers.js';
import { EndpointAuth, type Credentials } from './auth.js';
import { createEgress } from './egress.js';
import type { BreakerOptions } from './circuit-breaker.js';
import { EndpointState, type EndpointEvents, type RateLimitPolicy, type SharedBudget } from './endpoint-state.js';
import type { RateLimit } from './rate-limit.js';
import type { TokenCache } from './token-cache.js';

export interface EndpointOptions {
  url: string;
  credentials?: Credentials;
  timeouts: { connect: number; headers: number; body: number };
  tokens: TokenCache;
  /** Another Stevedore: it gets ?ns= and the loop-detection chain. */
  mirror: boolean;
  breaker: BreakerOptions;
  rateLimit: RateLimitPolicy;
  log: Logger;
  /** Turn the address guard off: redirects and token realms may lead anywhere. */
  allowLinkLocal?: boolean;
  /** Host names, addresses and CIDR ranges redirects and realms may reach although they are private. */
  redirectAllow?: readonly string[];
  /** '' or absent: HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment; 'none': direct; else a forward proxy URL. */
  proxy?: string;
  /** A PEM file of CA certificates trusted for this endpoint besides the default ones. */
  caFile?: string;
  /** Told about every response from this endpoint (metrics). */
  observe?: (response: { endpoint: string; method: string; status: number; ms: number }) => void;
  /** The pull budget shared with the other replicas of a cluster, per endpoint and credential. */
  sharedBudget?: (endpoint: string, credential: string) => SharedBudget | undefined;
  /** Told when the circuit opens or closes and when the pull budget runs low (notifications). */
  events?: EndpointEvents;
}


export interface UpstreamRequest {
  method: 'GET' | 'HEAD';
  /** Path and query below the endpoint, starting with /v2/. */
  path: string;
  /** The repository, for the token scope. */
  repo?: string;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** The registry the request is for, passed as ?ns= to mirror endpoints. */
  ns?: string;
  /** Mirrors this request already passed through, this one included. */
  via?: readonly string[];
}

export type ResponseHeaders = Record<string, string | string[] | undefined>;

/** The first value of a response header. */
export function header(headers: ResponseHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

export interface UpstreamResponse {
  status: number;
  headers: ResponseHeaders;
  body: Dispatcher.ResponseData['body'];
  /** The endpoint that answered, for logs and errors (no credentials in it). */
  endpoint: string;
  rateLimit: RateLimit | undefined;
}

const MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/**
 * One upstream endpoint: a pooled undici dispatcher, the auth challenge flow,
 * and redirects that never carry our Authorization to another host.
 */
export class EndpointClient {
  readonly origin: string;
  readonly state: EndpointState;
  readonly mirror: boolean;
  private readonly basePath: string;
  /** Everything goes through it: requests, redirects, probes and token fetches. */
  private readonly agent: Dispatcher;
  private readonly auth: EndpointAuth;
  private readonly observer: EndpointOptions['observe'];
  private readonly allowLinkLocal: boolean;
  /** Where redirects and realms may lead besides public addresses: the endpoint's own host and redirectAllow. */
  private readonly allowance: TargetAllowance;

  constructor(options: EndpointOptions) {
    this.observer = options.observe;
    const url = new URL(options.url);
    this.origin = url.origin;
    this.basePath = url.pathname.replace(/\/+$/, '');
    this.mirror = options.mirror;
    this.allowLinkLocal = options.allowLinkLocal === true;
    this.allowance = new TargetAllowance(url.hostname.replace(/^\[(.*)\]$/, '$1'), options.redirectAllow);
    const credential = options.credentials?.username || 'anonymous';
    this.state = new EndpointState(this.displayUrl, credential, options.breaker, options.rateLimit, options.log, options.sharedBudget?.(this.displayUrl, credential), options.events);
    const egress = createEgress({
      proxy: options.proxy ?? '',
      caFile: options.caFile ?? '',
      connectTimeoutMs: options.timeouts.connect,
      headersTimeoutMs: options.timeouts.headers,
      bodyTimeoutMs: options.timeouts.body,
      connections: 64,
      keepAliveTimeoutMs: 30_000,
      allowance: this.allowLinkLocal ? undefined : this.allowance,
    });
    this.agent = egress.dispatcher;
    if (egress.proxy) options.log.info({ upstream: this.displayUrl, proxy: egress.proxy }, 'upstream reached through a proxy');
    this.auth = new EndpointAuth(this.agent, options.tokens, options.credentials, {
      timeoutMs: options.timeouts.headers,
      endpointHost: url.hostname,
      checkTarget: (target) => this.checkTarget(target),
    });
  }

  get displayUrl(): string {
    return `${this.origin}${this.basePath}`;
  }

  async request(req: UpstreamRequest): Promise<UpstreamResponse> {
    const path = this.mirror && req.ns ? withQuery(`${this.basePath}${req.path}`, 'ns', req.ns) : `${this.basePath}${req.path}`;
    // The caller's deadline bounds every phase: the shared ping and token fetch, the request, its retry and redirects.
    await this.auth.ping(this.origin, `${this.basePath}/v2/`, req.signal);
    let authorization = await this.auth.authorize(req.repo, req.signal);
    let res = await this.send(this.origin, path, req, authorization);
    // A 401 teaches us the challenge, or tells us the token expired: retry once.
    if (res.statusCode === 401 && this.auth.learn(res.headers['www-authenticate'], req.repo, authorization)) {
      await res.body.dump();
      authorization = await this.auth.authorize(req.repo, req.signal);
      res = await this.send(this.origin, path, req, authorization);
    }
    let current = new URL(path, this.origin);
    for (let hop = 0; REDIRECT_STATUSES.has(res.statusCode) && hop < MAX_REDIRECTS; hop++) {
      const location = res.headers.location;
      if (typeof location !== 'string') break;
      await res.body.dump();
      const next = new URL(location, current);
      if (next.protocol !== 'https:' && next.protocol !== 'http:') {
        throw new Error(`${this.displayUrl} redirected to an unsupported scheme ${next.protocol}`);
      }
      this.checkTarget(next);
      const sameOrigin = next.origin === this.origin;
      res = await this.send(next.origin, `${next.pathname}${next.search}`, req, sameOrigin ? authorization : undefined);
      current = next;
    }
    return { status: res.statusCode, headers: res.headers, body: res.body, endpoint: this.displayUrl, rateLimit: this.state.rateLimit };
  }

  /** Active health check: `GET /v2/` answering 200 or 401 means the registry is up. */
  async probe(timeoutMs: number): Promise<boolean> {
    const res = await this.agent.request({
      origin: this.origin,
      path: `${this.basePath}/v2/`,
      method: 'GET',
      headers: { 'user-agent': 'stevedore' },
      signal: AbortSignal.timeout(timeoutMs),
    });
    await res.body.dump();
    return res.statusCode === 200 || res.statusCode === 401;
  }

  /** Redirects and realms may not lead to loopback, private, link-local or metadata addresses unless allowed. */
  private checkTarget(target: URL): void {
    if (!this.allowLinkLocal) assertAllowedTarget(target, this.allowance);
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  private async send(origin: string, path: string, req: UpstreamRequest, authorization: string | undefined): Promise<Dispatcher.ResponseData> {
    const headers: Record<string, string> = { 'user-agent': 'stevedore', ...req.headers };
    if (authorization) headers.authorization = authorization;
    if (this.mirror && req.via?.length) headers[VIA_HEADER] = req.via.join(', ');
    const started = performance.now();
    const res = await this.agent.request({ origin, path, method: req.method, headers, signal: req.signal });
    const ms = Math.round(performance.now() - started);
    this.state.observe(req.method, path, res.statusCode, res.headers, ms);
    this.observer?.({ endpoint: this.displayUrl, method: req.method, status: res.statusCode, ms });
    return res;
  }
}

function withQuery(path: string, name: string, value: string): string {
  return `${path}${path.includes('?') ? '&' : '?'}${name}=${encodeURIComponent(value)}`;
}
