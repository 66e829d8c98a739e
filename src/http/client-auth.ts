import type { Context, Next } from 'koa';
import { globToRegExp } from '../mirror/resolve.js';
import type { Target } from '../mirror/mirror.js';
import { denied, tooManyRequests, unauthorized, withLogDetail } from '../oci/errors.js';
import type { HtpasswdVerifier } from './htpasswd.js';
import type { RequestLogFields } from './request-log.js';

export interface AccessRule {
  /** A user name, or `*` for users without a rule of their own. */
  user: string;
  /** `registry/repository` patterns. */
  allow: readonly string[];
}

/**
 * Which repositories each user may pull. A user's own rule wins over `*`;
 * with neither, the user may pull whatever the mirror serves.
 */
export class AccessRules {
  private readonly byUser = new Map<string, RegExp[]>();

  constructor(rules: readonly AccessRule[]) {
    for (const rule of rules) {
      const patterns = this.byUser.get(rule.user) ?? [];
      patterns.push(...rule.allow.map(globToRegExp));
      this.byUser.set(rule.user, patterns);
    }
  }

  check(user: string, target: Target): void {
    const patterns = this.byUser.get(user) ?? this.byUser.get('*');
    if (!patterns) return;
    const name = `${target.registry}/${target.repo}`;
    if (!patterns.some((p) => p.test(name))) throw denied(`user "${user}" may not pull ${name}`);
  }
}

/** The user and password of a Basic Authorization header, if it is one. */
export function parseBasic(header: string | undefined): { user: string; password: string } | undefined {
  const match = header ? /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header) : null;
  if (!match?.[1]) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/**
 * Requires Basic credentials from the htpasswd file on the /v2 API. The
 * challenge is the one docker, containerd, podman and skopeo all answer.
 */
export function clientAuth(verifier: HtpasswdVerifier, realm: string) {
  const login = basicLogin(verifier, realm);
  return async (ctx: Context, next: Next): Promise<void> => {
    if (ctx.path !== '/v2' && !ctx.path.startsWith('/v2/')) return next();
    await login(ctx);
    await next();
  };
}

/** Checks a request's Basic credentials; throws 401 (or 429 for a busy or locked-out address) unless they are good. */
export function basicLogin(verifier: HtpasswdVerifier, realm: string): (ctx: Context) => Promise<void> {
  const challenge = { 'WWW-Authenticate': `Basic realm="${realm}", charset="UTF-8"` };
  return async (ctx) => {
    const credentials = parseBasic(ctx.get('Authorization') || undefined);
    if (!credentials) throw unauthorized('this mirror requires a user name and password', challenge);
    const verdict = await verifier.verify(credentials.user, credentials.password, ctx.ip);
    if (verdict.result === 'busy') throw tooManyRequests(1, 'too many logins are being checked; retry shortly');
    if (verdict.result === 'locked') {
      throw withLogDetail(tooManyRequests(verdict.retryAfterSeconds, 'too many failed logins from this address; retry later'), `login refused for user "${credentials.user.slice(0, 100)}": too many failures from ${ctx.ip}`);
    }
    if (verdict.result === 'rejected') {
      throw withLogDetail(unauthorized('invalid user name or password', challenge), `login failed for user "${credentials.user.slice(0, 100)}"`);
    }
    (ctx.state as RequestLogFields).user = credentials.user;
  };
}
