import { Agent, type Dispatcher } from 'undici';
import { EndpointAuth, type Credentials } from './auth.js';
import type { TokenCache } from './token-cache.js';

export interface EndpointOptions {
  url: string;
  credentials?: Credentials;
  timeouts: { connect: number; headers: number; body: number };
  tokens: TokenCache;
}

export interface UpstreamRequest {
  method: 'GET' | 'HEAD';
  /** Path and query below the endpoint, starting with /v2/. */
  path: string;
  /** The repository, for the token scope. */
  repo?: string;
  headers?: Record<string, string>;
  /** Byte offset to resume a blob from. */
  signal?: AbortSignal;
}

export type ResponseHeaders = Record<string, string | string[] | undefined>;

export interface UpstreamResponse {
  status: number;
  headers: ResponseHeaders;
  body: Dispatcher.ResponseData['body'];
  /** The endpoint that answered, for logs and errors (no credentials in it). */
  endpoint: string;
}

const MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/**
 * One upstream endpoint: a pooled undici dispatcher, the auth challenge flow,
 * and redirects that never carry our Authorization to another host.
 */
export class EndpointClient {
  readonly origin: string;
  private readonly basePath: string;
  private readonly agent: Agent;
  private readonly auth: EndpointAuth;

  constructor(options: EndpointOptions) {
    const url = new URL(options.url);
    this.origin = url.origin;
    this.basePath = url.pathname.replace(/\/+$/, '');
    this.agent = new Agent({
      connect: { timeout: options.timeouts.connect },
      headersTimeout: options.timeouts.headers,
      bodyTimeout: options.timeouts.body,
      connections: 64,
      keepAliveTimeout: 30_000,
    });
    this.auth = new EndpointAuth(this.agent, options.tokens, options.credentials, options.timeouts.headers);
  }

  get displayUrl(): string {
    return `${this.origin}${this.basePath}`;
  }

  async request(req: UpstreamRequest): Promise<UpstreamResponse> {
    const path = `${this.basePath}${req.path}`;
    await this.auth.ping(this.origin, `${this.basePath}/v2/`);
    let authorization = await this.auth.authorize(req.repo);
    let res = await this.send(this.origin, path, req, authorization);
    // A 401 teaches us the challenge, or tells us the token expired: retry once.
    if (res.statusCode === 401 && this.auth.learn(res.headers['www-authenticate'], req.repo, authorization)) {
      await res.body.dump();
      authorization = await this.auth.authorize(req.repo);
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
      const sameOrigin = next.origin === this.origin;
      res = await this.send(next.origin, `${next.pathname}${next.search}`, req, sameOrigin ? authorization : undefined);
      current = next;
    }
    return { status: res.statusCode, headers: res.headers, body: res.body, endpoint: this.displayUrl };
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  private send(origin: string, path: string, req: UpstreamRequest, authorization: string | undefined): Promise<Dispatcher.ResponseData> {
    const headers: Record<string, string> = { 'user-agent': 'stevedore', ...req.headers };
    if (authorization) headers.authorization = authorization;
    return this.agent.request({ origin, path, method: req.method, headers, signal: req.signal });
  }
}
