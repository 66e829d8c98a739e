// The hostile building blocks of the fuzz test's requests: names, references,
// query strings, headers and malformed raw requests. Pure functions of an Rng.
import type { FuzzWorld } from './fuzz-requests.js';

export interface Rng {
  float(): number;
  int(n: number): number;
  pick<T>(xs: readonly T[]): T;
  chance(p: number): boolean;
  hex(n: number): string;
}

/** Percent-encodes as UTF-8; the pool can only send path bytes 0x21-0xFF. */
export const encodeUnicode = (s: string): string => encodeURIComponent(s);

const TRAVERSAL_UNITS = ['../', '..%2f', '..%2F', '%2e%2e%2f', '%2e%2e/', '.%2e/', '%2e./', '%252e%252e%252f', '..%252f', '..%5c', '..\\', '%c0%ae%c0%ae/', '....//', '..;/', '..%00/', '.../', '%u002e%u002e/'];

/** A traversal (plain, encoded, double-encoded, backslashed…) to one of the canary files. */
export function traversalTo(rng: Rng, world: FuzzWorld): string {
  const unit = rng.pick(TRAVERSAL_UNITS);
  const target = rng.pick(world.canaryRelative).replace(/^(\.\.\/)+/, '');
  const slash = rng.pick(['/', '/', '%2f', '%5c', '\\']);
  return unit.repeat(1 + rng.int(8)) + target.split('/').join(slash);
}

/** Repository names that must be refused (or resolve only to configured registries). */
export function hostileNames(rng: Rng, world: FuzzWorld): string[] {
  const host = world.canaryHost;
  const port = host.split(':')[1] ?? '1';
  return [
    'UPPER/case', 'Library/Alpine', 'library/ALPINE', '../../etc/passwd', '..', '.', 'a/../b', 'library/alpine/..', '../library/alpine', './library/alpine',
    '%2e%2e/%2e%2e/etc', '%252e%252e%252fetc', 'library%2falpine', 'a%00b', 'library/alpine%00', 'a\\..\\b', '..\\..\\etc', traversalTo(rng, world),
    'a'.repeat(256), 'a'.repeat(255), 'a'.repeat(10_000 + rng.int(2_000)), `${'a/'.repeat(200)}a`, '-lead', 'trail-', '_lead', 'trail_', '.lead', 'trail.',
    'a//b', 'a/', '/a', 'a___b', 'a..b', 'a.-b', 'a--b', 'a__b', 'a-_b',
    `${host}/x`, `${host}/library/alpine`, host, `127.0.0.1/x`, `localhost/x`, `localhost:${port}/x`, 'evil.example/x', `[::1]:${port}/x`, `user@${host}/x`,
    `user:pw@${host}/x`, `docker.io@${host}/x`, `0x7f000001:${port}/x`, `127.1:${port}/x`, `2130706433:${port}/x`, `docker.io:${port}/x`, `docker.io.:443/x`,
    `${host}%2flibrary%2falpine`, `${host}%2f..%2fx`, 'DOCKER.IO/library/alpine', 'Docker.Io/acme/app', 'REGISTRY.EXAMPLE.COM/acme/app', 'registry.example.com./acme/app',
    encodeUnicode('ａｌｐｉｎｅ'), encodeUnicode('alpiné/x'), 'alpin\u00e9', 'xn--alpine-x', `registry.example.com/${traversalTo(rng, world)}`, 'docker.io/../../x',
    rng.pick(world.canaryAbsolute), encodeURIComponent(rng.pick(world.canaryAbsolute)), rng.hex(1 + rng.int(40)),
  ];
}

/** Tags that must be refused, or simply not found. */
export function hostileTags(rng: Rng): string[] {
  return [
    '.', '..', '...', '-x', '_x', 'a'.repeat(128), 'a'.repeat(129), 'a'.repeat(10_000 + rng.int(500)), 'latest%00', 'LATEST', '%2e%2e', '..%2f..%2f..%2fetc%2fpasswd',
    encodeUnicode('😀'), '%ff', 'v1;rm', 'v1%20', 'v1\\', 'v1.', 'v1~', '$(id)', '%24%7bjndi%3aldap%3a%2f%2fx%7d', '3.19%3f', 'latest%23', 'latest%2F..', 'latest+1',
    '3.19%2500', '%33.19', `t${rng.hex(4)}`, 'latest%3a', '%3alatest',
  ];
}

/** Digests of every wrong shape, a few valid-shaped ones, and the canary blob's. */
export function hostileDigests(rng: Rng, world: FuzzWorld): string[] {
  const known = rng.pick(rng.pick(world.images).blobs).digest;
  const hex = known.slice(7);
  const flipped = `sha256:${hex.slice(0, 10)}${hex[10] === '0' ? '1' : '0'}${hex.slice(11)}`;
  return [
    `sha256:${rng.hex(64).toUpperCase()}`, `sha256:${hex.toUpperCase()}`, `sha256:${rng.hex(63)}`, `sha256:${rng.hex(65)}`, `sha256:${rng.hex(128)}`,
    `sha512:${rng.hex(128)}`, `sha512:${rng.hex(64)}`, `sha384:${rng.hex(96)}`, `md5:${rng.hex(32)}`, '', 'sha256:', ':', `:${rng.hex(64)}`,
    `SHA256:${hex}`, `sha256:${hex}:`, `sha256:${hex}=`, 'sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564', `sha256:${'g'.repeat(64)}`,
    `sha256%3a${hex}`, `sha256%3A${hex}`, `sha256%253a${hex}`, `sha256:${hex}%00`, `sha256:${hex}%20`, `sha256:..%2f..%2f${rng.pick(world.canaryRelative)}`,
    `sha256:${hex}\\..\\..`, `sha256:${'0'.repeat(64)}`, `sha256:${'f'.repeat(64)}`, world.fakeBlobDigest, flipped, `sha256:${rng.hex(10_000)}`,
    `sha256:${rng.hex(64)}`, `sha256:-${rng.hex(63)}`, `sha256.x:${rng.hex(64)}`, `sha256__x:${rng.hex(64)}`, `${known}%2f..`, `sha256:${hex.slice(0, 32)}%00${hex.slice(32)}`,
  ];
}

const NS_VALUES = (host: string, port: string): string[] => [
  '', 'docker.io', 'DOCKER.io', 'docker.io.', '%20docker.io', '+docker.io', 'docker.io%20', 'index.docker.io', 'registry.example.com', 'registry.example.com.',
  host, `${host}%2f`, '127.0.0.1', 'localhost', `localhost:${port}`, 'evil.example', 'docker.io@evil.example', `docker.io@${host}`, 'evil.example@docker.io',
  `user:pw@${host}`, 'docker.io/evil', 'docker.io%2fevil', 'docker.io%252f..', `http://${host}`, `http%3a%2f%2f${host}`, '%64ocker.io', 'docker.io%00',
  'docker.io%00.evil.example', 'docker%2eio', 'docker.io:443', 'docker.io:80', 'a'.repeat(3000), '%', '%zz', '%ff%fe', '%c3%a9', '..', '../docker.io',
  `[::1]:${port}`, `0x7f.0.0.1:${port}`, `2130706433:${port}`, `127.1:${port}`, '*', 'docker.io#frag', 'docker.io;x', encodeUnicode('dockér.io'), encodeUnicode('ｄｏｃｋｅｒ.io'),
];

/** A query string (leading `?`) with hostile ns values, repeats, encodings and odd parameters. */
export function hostileQuery(rng: Rng, world: FuzzWorld): string {
  const port = world.canaryHost.split(':')[1] ?? '1';
  const v = (): string => rng.pick(NS_VALUES(world.canaryHost, port));
  return rng.pick([
    () => `?ns=${v()}`, () => `?ns=${v()}`, () => `?ns=${v()}&ns=docker.io`, () => `?ns=docker.io&ns=${v()}`, () => `?ns=${v()}&ns=${v()}`, () => '?ns', () => '?ns=',
    () => `?ns[]=${v()}`, () => `?ns[a]=${v()}`, () => `?NS=${v()}`, () => `?%6es=${v()}`, () => `?ns=${v()}&n=${rng.pick(['-1', '0', 'abc', '99999999999999999999', '1e9', '%00'])}`,
    () => `?n=${rng.pick(['-1', 'x', '1&n=2', '%ff'])}&last=${rng.pick(['', '%00', 'z'.repeat(2000), '../..', encodeUnicode('☃')])}`, () => '?', () => '??', () => '?&&&',
    () => '?%%%', () => '?%zz=%zz', () => `?ns=${v()}#${v()}`, () => `?${'a=b&'.repeat(500)}`, () => `?ns=docker.io&ns=docker.io&ns=docker.io`,
    () => `?__proto__=x&constructor=y&ns=${v()}`, () => `?ns=${encodeURIComponent(`${world.canaryHost}/v2/`)}`,
  ])();
}

/** Random Range values: bogus syntax, reversed, suffix, huge, negative, hundreds of ranges. */
function rangeValue(rng: Rng): string {
  const many = (): string => `bytes=${Array.from({ length: 100 + rng.int(600) }, (_, i) => (rng.chance(0.5) ? `${i}-${i}` : `${rng.int(1e6)}-${rng.int(1e6)}`)).join(',')}`;
  return rng.pick([
    'bytes=-', 'bytes=5-1', 'bytes=-1', 'bytes=-0', 'bytes=0-', 'bytes=0-0', 'bytes=1-1', 'bytes=100-200', 'bytes=999999999999-', 'bytes=-99999999999999999999999',
    'bytes=1e3-', 'bytes=0x10-', 'items=0-1', 'bytes=--1', 'bytes= 0 - 1 ', 'bytes=18446744073709551616-18446744073709551617', 'bytes=9007199254740993-',
    'bytes=0-9007199254740993', 'bytes=-9007199254740993', '', 'bytes=', 'bytes=,', 'bytes=0-0,-1', 'bytes=1-2, 0-1', 'bytes=-1-2', 'bytes=1-2-3', 'bytes=NaN-',
    'bytes=Infinity-', 'bytes=-Infinity', 'bytes=0-1,', `bytes=${'9'.repeat(400)}-`, `bytes=-${'9'.repeat(400)}`, 'BYTES=0-1', 'bytes=0-1;q=1', 'bytes=\u00b9-2',
    'bytes=+1-2', 'bytes=01-02', 'bytes=\t0-1', 'bytes=-5, -3', 'bytes=0-0,1-1,2-2', many(), many(),
  ]);
}

function acceptValue(rng: Rng): string | string[] {
  const types = ['application/vnd.oci.image.index.v1+json', 'application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json', 'text/html', 'x/y'];
  const huge = (n: number): string => Array.from({ length: n }, (_, i) => `${rng.pick(types)};q=0.${i % 10}, application/x-${rng.hex(8)}`).join(', ');
  return rng.pick([
    '*/*', '', ',,,;;;', 'application/vnd.oci.image.manifest.v1+json;q=0', 'APPLICATION/VND.OCI.IMAGE.INDEX.V1+JSON', `${'a'.repeat(5000)}/x`, 'text/html', 'application/json',
    ['*/*', 'application/vnd.oci.image.index.v1+json'], huge(80 + rng.int(120)), huge(80 + rng.int(120)), rng.chance(0.1) ? huge(500) : '*/*; q=1; q=2',
  ]);
}

/** One to three hostile headers. */
export function hostileHeaders(rng: Rng, world: FuzzWorld): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {};
  const n = 1 + rng.int(3);
  for (let i = 0; i < n; i++) {
    switch (rng.int(12)) {
      case 0: case 1: case 2: headers.range = rangeValue(rng); break;
      case 3: case 4: headers.accept = acceptValue(rng); break;
      case 5: headers.authorization = rng.pick(['Bearer x', 'Bearer ', 'Basic !!!', 'Basic YWRtaW46YWRtaW4=', `Bearer ${'x'.repeat(8000)}`, 'Negotiate abc', 'Basic', `Bearer ${world.instanceId}`, 'Digest username="a"']); break;
      case 6: headers.host = rng.pick([world.canaryHost, 'evil.example', 'localhost:1', 'a'.repeat(1000), '[::1]', '127.0.0.1:0', 'user@evil.example', 'docker.io', `${world.canaryHost}:80`, 'h\u00f6st', '127.0.0.1:5000/../']); break;
      case 7: headers['stevedore-via'] = rng.pick([`m-${rng.hex(6)}`, world.instanceId, `x, ${world.instanceId}`, `${'a,'.repeat(1000)}b`, world.canaryHost, ',,,', `${world.instanceId}x`, ` ${world.instanceId} `]); break;
      case 8: headers['if-none-match'] = rng.pick(['*', `"${rng.pick(world.images).manifestDigest}"`, 'W/"x"', '"' + 'x'.repeat(3000)]); break;
      case 9: headers[rng.pick(['x-forwarded-host', 'x-forwarded-for', 'forwarded', 'x-real-ip', 'x-original-url', 'x-rewrite-url'])] = rng.pick([world.canaryHost, `for=1.2.3.4;host=${world.canaryHost}`, '/v2/../../etc/passwd', '127.0.0.1']); break;
      case 10: headers[rng.pick(['origin', 'referer', 'user-agent', 'cookie', 'x-http-method-override', 'accept-encoding', 'if-range', 'te'])] = rng.pick(['http://evil.example', 'x'.repeat(4000), 'DELETE', 'gzip, br, zstd, x', `"${rng.hex(8)}"`, 'trailers', '\u00ff\u00fe']); break;
      default: headers[`x-${rng.hex(6)}`] = rng.pick(['', '\t', 'a'.repeat(2000), '\u00e9\u00e8', '() { :; }; echo vulnerable']);
    }
  }
  return headers;
}

export interface RawRequest {
  method: string;
  target: string;
  bytes: Buffer;
  /** A complete, well-formed enough request: the server must answer something. */
  expectResponse: boolean;
}

/** Malformed request lines and framing that no HTTP client library will send. */
export function rawRequests(rng: Rng, world: FuzzWorld): RawRequest[] {
  const host = world.canaryHost;
  const image = rng.pick(world.images);
  const H = 'Host: 127.0.0.1\r\nConnection: close\r\n';
  const r = (method: string, target: string, text: string | Buffer, expectResponse = true): RawRequest => ({
    method, target, bytes: Buffer.isBuffer(text) ? text : Buffer.from(text, 'latin1'), expectResponse,
  });
  return [
    r('GET', '/v2/\0', `GET /v2/\0 HTTP/1.1\r\n${H}\r\n`),
    r('GET', '/v2/a b', `GET /v2/a b/manifests/x HTTP/1.1\r\n${H}\r\n`),
    r('GET', '/v2/', 'GET /v2/\r\n\r\n', false),
    r('GET', '/v2/', `GET /v2/ HTTP/9.9\r\n${H}\r\n`),
    r('GET', '/v2/', 'GET /v2/ HTTP/1.0\r\n\r\n'),
    r('GET', '/v2/', 'GET /v2/ HTTP/1.1\r\nConnection: close\r\n\r\n'),
    r('get', '/v2/', `get /v2/ HTTP/1.1\r\n${H}\r\n`),
    r('BREW', '/v2/', `BREW /v2/ HTTP/1.1\r\n${H}\r\n`),
    r('CONNECT', host, `CONNECT ${host} HTTP/1.1\r\nHost: ${host}\r\n\r\n`, false),
    r('GET', `/v2/${image.repo}/manifests/${image.manifestDigest}`, `GET http://${host}/v2/${image.repo}/manifests/${image.manifestDigest} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`),
    r('GET', '/../../etc/passwd', `GET http://evil.example/../../etc/passwd HTTP/1.1\r\n${H}\r\n`),
    r('GET', '/v2/', `GET ${host}/v2/ HTTP/1.1\r\n${H}\r\n`),
    r('OPTIONS', '*', `OPTIONS * HTTP/1.1\r\n${H}\r\n`),
    r('GET', '/v2/', `GET /v2/ HTTP/1.1\r\n${H}BadHeader\r\n\r\n`),
    r('GET', '/v2/', `GET /v2/ HTTP/1.1\r\n${H}X-A: b\r\n c\r\n\r\n`),
    r('GET', '/v2/', `GET /v2/ HTTP/1.1\r\n${H}X-A: a\0b\r\n\r\n`),
    r('GET', '/v2/', `GET /v2/ HTTP/1.1\r\n${H}Host: ${host}\r\n\r\n`),
    r('POST', '/api/gc', `POST /api/gc HTTP/1.1\r\n${H}Content-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`),
    r('POST', '/api/gc', `POST /api/gc HTTP/1.1\r\n${H}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`, false),
    r('POST', '/api/gc', `POST /api/gc HTTP/1.1\r\n${H}Content-Type: application/json\r\nTransfer-Encoding: chunked, identity\r\n\r\n2\r\n{}\r\n0\r\n\r\n`),
    r('GET', '/v2/', `GET /v2/ HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\n`),
    r('GET', '/v2/', `GET /v2/ HTTP/1.1\r\n${H}Content-Length: 99999999999999999999\r\n\r\n`, false),
    r('GET', '/v2/', `GET /v2/ HTTP/1.1\r\n${H}Content-Length: 1\r\nContent-Length: 2\r\n\r\nab`),
    r('GET', '/v2/ä', Buffer.from(`GET /v2/ä/manifests/${image.tag ?? 'x'} HTTP/1.1\r\n${H}\r\n`, 'utf8')),
    r('GET', '/v2/ü', Buffer.from(`GET /v2/library/alpine/manifests/3.19?ns=dockér.io HTTP/1.1\r\n${H}X-Ü: ü\r\n\r\n`, 'utf8')),
    r('GET', '/v2/aaa', `GET /v2/${'a'.repeat(10_000 + rng.int(3_000))}/manifests/x HTTP/1.1\r\n${H}\r\n`),
    r('GET', '/v2/', `GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\nGET /v2/../../etc/passwd HTTP/1.1\r\n${H}\r\n`),
    r('GET', '/v2/', `GET /v2/ HTTP/1.1\r\n${H}Content-Length: 48\r\n\r\nGET /v2/x/manifests/y HTTP/1.1\r\nHost: ${host}\r\n\r\n`),
    r('GET', '/v2/', `GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`, false),
    r('GET', '/v2/', `GET /v2/ HTTP/1.1\r\nHost: ${'a'.repeat(20_000)}\r\nConnection: close\r\n\r\n`),
    r('GET', '/v2/', `GET /v2/ HTTP/1.1\r\n${H}Bad Header: x\r\n\r\n`),
    r('GET', '/v2/', `\r\n\r\nGET /v2/ HTTP/1.1\r\n${H}\r\n`),
    r('GET', 'v2/', `GET v2/ HTTP/1.1\r\n${H}\r\n`),
    r('GET', `/v2/${image.repo}/manifests/${image.tag ?? 'latest'}`, `GET /v2/${image.repo}/manifests/${image.tag ?? 'latest'}?ns=${host} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`),
    r('GET', '/v2/\x01', `GET /v2/\x01\x7f HTTP/1.1\r\n${H}\r\n`),
    r('PRI', '*', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', false),
    r('TLS', '', Buffer.from('16030100a5010000a10303' + rng.hex(64), 'hex'), false),
    r('', '', '\r\n', false),
    r('GET', '/v2/', `GET /v2/ HTTP/1.1\r\n${H}${Array.from({ length: 300 }, (_, i) => `X-H${i}: ${i}\r\n`).join('')}\r\n`),
    r('GET', '/v2/', `GET /v2/ HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`),
    r('GET', `/v2/${image.repo}/blobs/`, `GET /v2/${image.repo}/blobs/${rng.pick(image.blobs).digest} HTTP/1.1\r\n${H}Range: bytes=0-0,1-1,${'2-2,'.repeat(800)}3-3\r\n\r\n`),
  ];
}

/** One request of a keep-alive chain, and whether a server must close the connection after answering it. */
export interface ChainLink {
  method: string;
  target: string;
  text: string;
  /** Its body is unbounded or unread: the answer is the connection's last. */
  closes: boolean;
}

/**
 * Hostile requests that keep the connection open, to send one after another
 * on a single keep-alive connection (pipelined): bodies declared and not
 * sent, small bodies nobody reads, bad names and methods, between clean pulls.
 */
export function keepAliveLinks(rng: Rng, world: FuzzWorld): ChainLink[] {
  const image = rng.pick(world.images);
  const blob = rng.pick(image.blobs);
  const H = 'Host: 127.0.0.1\r\n';
  const link = (method: string, target: string, extra = '', body = '', closes = false): ChainLink => ({ method, target, text: `${method} ${target} HTTP/1.1\r\n${H}${extra}\r\n${body}`, closes });
  const manifest = `/v2/${image.repo}/manifests/${image.manifestDigest}`;
  return [
    link('GET', manifest, `Accept: ${ALL_MANIFEST_TYPES}\r\n`),
    link('HEAD', `/v2/${image.repo}/blobs/${blob.digest}`),
    link('GET', `/v2/${image.repo}/blobs/${blob.digest}`, 'Range: bytes=0-15\r\n'),
    link('GET', '/v2/', 'Content-Length: 5\r\n', 'hello'),
    link('GET', manifest, 'Content-Length: 99999999999999\r\n', '', true),
    link('GET', '/v2/', 'Transfer-Encoding: chunked\r\n', '0\r\n\r\n', true),
    link('GET', `/v2/${rng.pick(['UPPER', '..', '-x', 'a//b'])}/manifests/latest`),
    link('DELETE', manifest),
    link('GET', `/v2/library/alpine/manifests/3.19?ns=${rng.pick(['doc%E2%84%AAer.io', 'evil.example', '%00'])}`),
    link('GET', '/v2/', `Stevedore-Via: ${Array.from({ length: 20 }, (_, i) => `hop-${i}`).join(', ')}\r\n`),
    link('GET', '/v2/169.254.169.254/latest/manifests/x?ns=docker.io'),
    link('OPTIONS', '/v2/'),
    link('GET', '/healthz'),
  ];
}

const ALL_MANIFEST_TYPES = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json';
