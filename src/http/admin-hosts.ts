import type { Context, Next } from 'koa';
import { isIP } from 'node:net';
import { RegistryError } from '../oci/errors.js';

/**
 * Which Host names the admin API and the dashboard answer to. Loopback is
 * trusted by socket address only while no admin token is set, and a page on
 * an attacker's domain that rebinds its name to 127.0.0.1 reaches that socket
 * too: its requests carry the attacker's Host, so only loopback names and the
 * configured ones are accepted. With a token and no configured names, any
 * Host is accepted: the token is what a rebinding page cannot send.
 */
export class AdminHosts {
  private readonly names: Set<string>;

  constructor(configured: readonly string[], private readonly tokenSet: boolean) {
    this.names = new Set(configured.map((h) => h.toLowerCase()));
  }

  /** Whether a Host header value (name or address, optional port) may reach the admin API. */
  allows(host: string): boolean {
    if (this.tokenSet && this.names.size === 0) return true;
    const name = hostName(host);
    return isLoopbackName(name) || this.names.has(name);
  }

  /**
   * Whether a browser Origin belongs to a page this mirror serves (never a
   * foreign site). `request` is the scheme and host the browser addressed:
   * Koa's ctx.protocol and ctx.host, which behind a trusted proxy (trustProxy)
   * come from X-Forwarded-Proto and X-Forwarded-Host.
   */
  allowsOrigin(origin: string, request: { protocol: string; host: string }): boolean {
    let url: URL;
    try {
      url = new URL(origin);
    } catch {
      return false;
    }
    // A page served over plain HTTP, which anyone on the path may rewrite, does not post to an HTTPS API.
    if (request.protocol === 'https' && url.protocol !== 'https:') return false;
    if (this.tokenSet && this.names.size === 0) return url.host !== '' && url.host === normalHost(request.protocol, request.host);
    return this.allows(url.host);
  }

  /** Middleware refusing requests whose Host is not allowed (421: misdirected, as for a name this server does not serve). */
  guard() {
    return async (ctx: Context, next: Next): Promise<void> => {
      // Behind a trusted proxy the name the browser used is X-Forwarded-Host (ctx.host); the Host
      // the proxy sent must pass too, so trusting the proxy never loosens the check.
      const host = [ctx.get('Host'), ...(ctx.app.proxy ? [ctx.host] : [])].find((name) => !this.allows(name));
      if (host !== undefined) {
        throw new RegistryError(421, 'DENIED', 'this host name is not served here', `the admin API and dashboard answer to loopback names and admin.hosts only, not "${host.slice(0, 100)}"`);
      }
      await next();
    };
  }
}

/** A host as a URL of this scheme holds it: lowercased, the scheme's default port dropped; '' when it is no host. */
function normalHost(protocol: string, host: string): string {
  try {
    return new URL(`${protocol}://${host}`).host;
  } catch {
    return '';
  }
}

/** The name of a Host header value, lowercased, without port or IPv6 brackets. */
function hostName(host: string): string {
  const lower = host.trim().toLowerCase();
  if (lower.startsWith('[')) return lower.slice(1, lower.indexOf(']') > 0 ? lower.indexOf(']') : undefined);
  const colon = lower.lastIndexOf(':');
  return colon >= 0 && lower.indexOf(':') === colon ? lower.slice(0, colon) : lower;
}

function isLoopbackName(name: string): boolean {
  if (name === 'localhost' || name.endsWith('.localhost')) return true;
  if (isIP(name) === 4) return name.startsWith('127.');
  return name === '::1';
}
