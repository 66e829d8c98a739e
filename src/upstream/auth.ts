import { createHash } from 'node:crypto';
import type { Dispatcher } from 'undici';
import { parseChallenges, type Challenge } from './challenge.js';
import { TokenCache, type IssuedToken } from './token-cache.js';

/** The registry's token service refused us: wrong or missing credentials. Never carries the secret. */
export class UpstreamAuthError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UpstreamAuthError';
  }
}

const MAX_TOKEN_RESPONSE = 64 * 1024;

/** The body as text, or undefined (and the rest discarded) once it passes `limit` bytes. */
async function readBounded(body: Dispatcher.ResponseData['body'], limit: number): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      body.destroy();
      return undefined;
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Waits for work other callers may share, until `signal` aborts: then this
 * caller gets the signal's reason while the work goes on for the others.
 */
function untilAborted<T>(shared: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return shared;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    // Settles (and so handles) the shared promise whether or not this caller still waits.
    shared.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
}

export interface AuthOptions {
  timeoutMs: number;
  /** The endpoint's host: credentials go to a plain-http realm only on this host. */
  endpointHost: string;
  /** Refuses realms the endpoint may not send us to (link-local, metadata). */
  checkTarget: (url: URL) => void;
}

export interface Credentials {
  username: string;
  password: string;
}

/**
 * Authorization for one endpoint: remembers the endpoint's challenge so that
 * later requests ask for a token up front instead of taking a 401 first.
 */
export class EndpointAuth {
  private challenge: Challenge | undefined;
  private pinged: Promise<void> | undefined;
  private readonly identity: string;

  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly tokens: TokenCache,
    private readonly credentials: Credentials | undefined,
    private readonly options: AuthOptions,
  ) {
    this.identity = credentials
      ? `user:${createHash('sha256').update(`${credentials.username}\0${credentials.password}`).digest('hex').slice(0, 16)}`
      : 'anonymous';
  }

  /**
   * Like clients do, ping `/v2/` once to learn the endpoint's challenge, so that
   * even the first blob GET carries a token instead of drawing a 401.
   * The ping is shared: `signal` ends this caller's wait, never the ping itself.
   */
  async ping(origin: string, path: string, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    this.pinged ??= (async () => {
      const res = await this.dispatcher.request({ origin, path, method: 'GET', headers: { 'user-agent': 'stevedore' }, signal: AbortSignal.timeout(this.options.timeoutMs) });
      await res.body.dump();
      if (res.statusCode === 401) this.learn(res.headers['www-authenticate'], undefined, undefined);
    })().catch((err: unknown) => {
      this.pinged = undefined; // try again on the next request
      throw err;
    });
    return untilAborted(this.pinged, signal);
  }

  /**
   * The Authorization header for a request on `repo`, if the endpoint wants one.
   * Token fetches are shared: `signal` ends this caller's wait, never the fetch.
   */
  async authorize(repo: string | undefined, signal?: AbortSignal): Promise<string | undefined> {
    signal?.throwIfAborted();
    const challenge = this.challenge;
    if (!challenge) return undefined;
    if (challenge.scheme === 'basic') return this.basic();
    if (challenge.scheme !== 'bearer') return undefined;
    const token = await untilAborted(this.token(challenge, repo), signal);
    return `Bearer ${token}`;
  }

  /**
   * Learns from a 401. Returns whether a retry with fresh authorization can help.
   * The rejected header (if any) is dropped from the token cache.
   */
  learn(header: string | string[] | undefined, repo: string | undefined, rejected: string | undefined): boolean {
    const value = Array.isArray(header) ? header.join(', ') : header;
    const challenge = parseChallenges(value).find((c) => c.scheme === 'bearer' || c.scheme === 'basic');
    if (!challenge) return false;
    if (challenge.scheme === 'basic' && !this.credentials) return false;
    this.challenge = challenge;
    if (rejected?.startsWith('Bearer ')) {
      this.tokens.invalidate(this.tokenKey(challenge, repo), rejected.slice('Bearer '.length));
    }
    return true;
  }

  private basic(): string | undefined {
    if (!this.credentials) return undefined;
    const { username, password } = this.credentials;
    return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
  }

  private scopeFor(challenge: Challenge, repo: string | undefined): string {
    return repo ? `repository:${repo}:pull` : (challenge.params.scope ?? '');
  }

  /** Tokens are per identity too: an anonymous token must never stand in for a credentialed one, or the reverse. */
  private tokenKey(challenge: Challenge, repo: string | undefined): string {
    return `${this.identity}\n${TokenCache.key(challenge.params.realm ?? '', challenge.params.service ?? '', this.scopeFor(challenge, repo))}`;
  }

  private token(challenge: Challenge, repo: string | undefined): Promise<string> {
    return this.tokens.get(this.tokenKey(challenge, repo), () => this.fetchToken(challenge, repo));
  }

  private async fetchToken(challenge: Challenge, repo: string | undefined): Promise<IssuedToken> {
    const realm = challenge.params.realm;
    if (!realm) throw new Error('bearer challenge without a realm');
    const url = new URL(realm);
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error(`token realm has unsupported scheme ${url.protocol}`);
    this.options.checkTarget(url);
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    const scope = this.scopeFor(challenge, repo);
    if (scope) url.searchParams.set('scope', scope);
    const headers: Record<string, string> = { 'user-agent': 'stevedore', accept: 'application/json' };
    // Never send the password in clear text to a host other than the registry's own.
    const basic = url.protocol === 'https:' || url.hostname === this.options.endpointHost ? this.basic() : undefined;
    if (basic) headers.authorization = basic;
    const res = await this.dispatcher.request({
      origin: url.origin,
      path: `${url.pathname}${url.search}`,
      method: 'GET',
      headers,
      signal: AbortSignal.timeout(this.options.timeoutMs),
    });
    if (res.statusCode === 401 || res.statusCode === 403) {
      await res.body.dump();
      const who = this.credentials ? `the credentials of user "${this.credentials.username}"` : 'anonymous access';
      throw new UpstreamAuthError(`token endpoint ${url.origin}${url.pathname} refused ${who} (${res.statusCode}) for scope "${scope}"`);
    }
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw new Error(`token endpoint ${url.origin}${url.pathname} answered ${res.statusCode} for scope "${scope}"`);
    }
    const text = await readBounded(res.body, MAX_TOKEN_RESPONSE);
    if (text === undefined) throw new Error(`token endpoint ${url.origin}${url.pathname} sent an oversized answer`);
    const body = JSON.parse(text) as { token?: string; access_token?: string; expires_in?: number };
    const token = body.token ?? body.access_token;
    if (!token) throw new Error(`token endpoint ${url.origin}${url.pathname} returned no token`);
    return { token, expiresInSeconds: typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 60 };
  }
}
