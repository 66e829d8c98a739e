import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { BlockList, isIP } from 'node:net';

/**
 * Link-local and cloud metadata addresses. An upstream that redirects (or
 * points its token realm) there could make the mirror fetch instance
 * credentials on an attacker's behalf, so only the configured endpoint itself
 * may live there, unless the config allows it.
 */
const FORBIDDEN = new BlockList();
FORBIDDEN.addSubnet('169.254.0.0', 16, 'ipv4'); // link-local, incl. 169.254.169.254 (AWS, GCP, Azure, OpenStack)
FORBIDDEN.addAddress('100.100.100.200', 'ipv4'); // Alibaba Cloud metadata
FORBIDDEN.addSubnet('0.0.0.0', 8, 'ipv4');
FORBIDDEN.addSubnet('fe80::', 10, 'ipv6'); // link-local
FORBIDDEN.addAddress('fd00:ec2::254', 'ipv6'); // AWS metadata over IPv6
FORBIDDEN.addSubnet('::ffff:169.254.0.0', 112, 'ipv6');

export function isForbiddenAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  return FORBIDDEN.check(address, family === 6 ? 'ipv6' : 'ipv4');
}

export class ForbiddenAddressError extends Error {
  readonly code = 'EFORBIDDENADDRESS';
  constructor(host: string, address: string) {
    super(`refusing to connect to ${host} (${address}): link-local and metadata addresses are off limits for redirects and token realms (see upstreams[].allowLinkLocal)`);
    this.name = 'ForbiddenAddressError';
  }
}

/** Throws if a redirect or realm URL names a forbidden address literally (literals skip DNS). */
export function assertAllowedTarget(url: URL, allowedHost: string): void {
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host === allowedHost) return;
  if (isForbiddenAddress(host)) throw new ForbiddenAddressError(host, host);
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `dns.lookup` for the endpoint's connection pool: names other than the
 * endpoint's own host may not resolve to forbidden addresses. Checking at
 * connect time, not before, also defeats DNS rebinding.
 */
export function guardedLookup(allowedHost: string) {
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      const list = addresses as LookupAddress[];
      if (hostname !== allowedHost) {
        const bad = list.find((a) => isForbiddenAddress(a.address));
        if (bad) return callback(new ForbiddenAddressError(hostname, bad.address), []);
      }
      if (options.all) return callback(null, list);
      const first = list[0];
      if (!first) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), []);
      callback(null, first.address, first.family);
    });
  };
}
