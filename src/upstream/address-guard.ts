import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { BlockList, isIP } from 'node:net';

/**
 * Addresses an upstream may not send the mirror to, by redirect or token
 * realm: loopback, private networks (RFC 1918, ULA, shared CGNAT space),
 * link-local and cloud metadata. An upstream that could point there would
 * make the mirror fetch from its own host, its cluster or instance
 * credentials on an attacker's behalf. The configured endpoint's own host is
 * always allowed; anything else only through upstreams[].redirectAllow.
 */
const FORBIDDEN = new BlockList();
FORBIDDEN.addSubnet('0.0.0.0', 8, 'ipv4');
FORBIDDEN.addSubnet('127.0.0.0', 8, 'ipv4'); // loopback
FORBIDDEN.addSubnet('10.0.0.0', 8, 'ipv4'); // RFC 1918
FORBIDDEN.addSubnet('172.16.0.0', 12, 'ipv4');
FORBIDDEN.addSubnet('192.168.0.0', 16, 'ipv4');
FORBIDDEN.addSubnet('100.64.0.0', 10, 'ipv4'); // shared address space (CGNAT), incl. Alibaba's 100.100.100.200
FORBIDDEN.addSubnet('169.254.0.0', 16, 'ipv4'); // link-local, incl. 169.254.169.254 (AWS, GCP, Azure, OpenStack)
FORBIDDEN.addAddress('::', 'ipv6');
FORBIDDEN.addAddress('::1', 'ipv6'); // loopback
FORBIDDEN.addSubnet('fc00::', 7, 'ipv6'); // unique local, incl. AWS's fd00:ec2::254
FORBIDDEN.addSubnet('fe80::', 10, 'ipv6'); // link-local
for (const [prefix, bits] of [['0.0.0.0', 8], ['127.0.0.0', 8], ['10.0.0.0', 8], ['172.16.0.0', 12], ['192.168.0.0', 16], ['100.64.0.0', 10], ['169.254.0.0', 16]] as const) {
  FORBIDDEN.addSubnet(`::ffff:${prefix}`, 96 + bits, 'ipv6'); // the same, IPv4-mapped
}

export function isForbiddenAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  return FORBIDDEN.check(address, family === 6 ? 'ipv6' : 'ipv4');
}

export class ForbiddenAddressError extends Error {
  readonly code = 'EFORBIDDENADDRESS';
  constructor(host: string, address: string) {
    super(`refusing to connect to ${host} (${address}): loopback, private, link-local and metadata addresses are off limits for redirects and token realms (see upstreams[].redirectAllow)`);
    this.name = 'ForbiddenAddressError';
  }
}

/**
 * Where redirects and realms may lead although the guard would refuse it:
 * the endpoint's own host, plus configured host names, addresses and CIDR ranges.
 */
export class TargetAllowance {
  private readonly hosts = new Set<string>();
  private readonly ranges = new BlockList();

  constructor(endpointHost: string, allow: readonly string[] = []) {
    this.hosts.add(endpointHost.toLowerCase());
    for (const entry of allow) {
      const [address, bits] = entry.split('/');
      const family = isIP(address ?? '');
      if (family === 0) this.hosts.add(entry.toLowerCase());
      else if (bits === undefined) this.ranges.addAddress(address!, family === 6 ? 'ipv6' : 'ipv4');
      else this.ranges.addSubnet(address!, Number(bits), family === 6 ? 'ipv6' : 'ipv4');
    }
  }

  host(name: string): boolean {
    return this.hosts.has(name.toLowerCase());
  }

  address(address: string): boolean {
    const family = isIP(address);
    return family !== 0 && this.ranges.check(address, family === 6 ? 'ipv6' : 'ipv4');
  }
}

/** Throws if a redirect or realm URL names a forbidden address literally (literals skip DNS). */
export function assertAllowedTarget(url: URL, allowed: TargetAllowance): void {
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (allowed.host(host) || allowed.address(host)) return;
  if (isForbiddenAddress(host)) throw new ForbiddenAddressError(host, host);
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `dns.lookup` for the endpoint's connection pool: names other than the
 * allowed ones may not resolve to forbidden addresses. Checking at connect
 * time, not before, also defeats DNS rebinding.
 */
export function guardedLookup(allowed: TargetAllowance) {
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      const list = addresses as LookupAddress[];
      if (!allowed.host(hostname)) {
        const bad = list.find((a) => isForbiddenAddress(a.address) && !allowed.address(a.address));
        if (bad) return callback(new ForbiddenAddressError(hostname, bad.address), []);
      }
      if (options.all) return callback(null, list);
      const first = list[0];
      if (!first) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), []);
      callback(null, first.address, first.family);
    });
  };
}
