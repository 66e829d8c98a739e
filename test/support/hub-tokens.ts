// Bearer-token bookkeeping for the Docker Hub double: issue scoped tokens,
// check them per repository, expire them on demand.
import { randomBytes, timingSafeEqual } from 'node:crypto';

export const HUB_SERVICE = 'registry.test';

export interface IssuedToken {
  token: string;
  /** Repository names granted pull on. */
  repos: Set<string>;
  issuedAt: Date;
  expiresAt: number;
  /** Basic-auth username used to obtain it, if any. */
  user?: string;
}

export type TokenCheck = 'ok' | 'missing' | 'invalid' | 'insufficient_scope';

/** Repository names from `repository:<name>:<actions>` scopes (several may be given). */
export function reposFromScopes(scopes: string[]): Set<string> {
  const repos = new Set<string>();
  for (const s of scopes) {
    for (const one of s.split(' ')) {
      const m = /^repository:(.+):([a-z,*]+)$/.exec(one);
      if (m?.[1] && m[2]?.split(',').some((a) => a === 'pull' || a === '*')) repos.add(m[1]);
    }
  }
  return repos;
}

export function parseBasic(header: string | undefined): { username: string; password: string } | undefined {
  if (!header) return undefined;
  const m = /^Basic\s+(\S+)$/i.exec(header.trim());
  if (!m?.[1]) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return undefined;
  return { username: decoded.slice(0, i), password: decoded.slice(i + 1) };
}

export function bearerOf(header: string | undefined): string | undefined {
  const m = header ? /^Bearer\s+(\S+)$/i.exec(header.trim()) : null;
  return m?.[1];
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function credentialsMatch(
  got: { username: string; password: string } | undefined,
  want: { username: string; password: string },
): boolean {
  return got !== undefined && safeEqual(got.username, want.username) && safeEqual(got.password, want.password);
}

export class TokenStore {
  private readonly tokens = new Map<string, IssuedToken>();
  private readonly maxTokens = 10_000; // bounded: oldest dropped first

  constructor(public ttlSeconds: number) {}

  issue(scopes: string[], user?: string): IssuedToken {
    const issuedAt = new Date();
    const t: IssuedToken = {
      token: randomBytes(24).toString('base64url'),
      repos: reposFromScopes(scopes),
      issuedAt,
      expiresAt: issuedAt.getTime() + this.ttlSeconds * 1000,
      ...(user !== undefined ? { user } : {}),
    };
    if (this.tokens.size >= this.maxTokens) {
      const oldest = this.tokens.keys().next();
      if (!oldest.done) this.tokens.delete(oldest.value);
    }
    this.tokens.set(t.token, t);
    return t;
  }

  /** `repo` undefined means the `/v2/` root, which any live token may call. */
  check(authorization: string | undefined, repo: string | undefined): TokenCheck {
    const raw = bearerOf(authorization);
    if (raw === undefined) return 'missing';
    const t = this.tokens.get(raw);
    if (!t || Date.now() >= t.expiresAt) return 'invalid';
    if (repo !== undefined && !t.repos.has(repo)) return 'insufficient_scope';
    return 'ok';
  }

  expireAll(): void {
    this.tokens.clear();
  }

  get size(): number {
    return this.tokens.size;
  }
}

export function tokenBody(t: IssuedToken, ttlSeconds: number): string {
  return JSON.stringify({
    token: t.token,
    access_token: t.token,
    // Whole seconds, as clients parse an int; a fractional TTL still expires on time.
    expires_in: Math.ceil(ttlSeconds),
    issued_at: t.issuedAt.toISOString(),
  });
}

export function bearerChallenge(realm: string, repo: string | undefined, error?: string): string {
  let v = `Bearer realm="${realm}",service="${HUB_SERVICE}"`;
  if (repo !== undefined) v += `,scope="repository:${repo}:pull"`;
  if (error) v += `,error="${error}"`;
  return v;
}

export function errorBody(code: string, message: string, detail: unknown = null): string {
  return JSON.stringify({ errors: [{ code, message, detail }] });
}

export function errorCodeFor(status: number): string {
  if (status === 401) return 'UNAUTHORIZED';
  if (status === 403) return 'DENIED';
  if (status === 404) return 'NAME_UNKNOWN';
  if (status === 429) return 'TOOMANYREQUESTS';
  return 'UNAVAILABLE';
}
