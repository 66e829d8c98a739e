// Seeded generation of hostile (and some valid) requests for the fuzz test.
// Every request is a pure function of (seed, index): one failing index replays alone.
import { hostileHeaders, hostileQuery, hostileNames, hostileDigests, hostileTags, encodeUnicode, keepAliveLinks, rawRequests, traversalTo, type ChainLink } from './fuzz-pieces.js';
import type { Rng } from './fuzz-pieces.js';

export type { Rng } from './fuzz-pieces.js';

export interface KnownBlob {
  digest: string;
  size: number;
}

export interface KnownImage {
  /** The repository upstream, e.g. `library/alpine`. */
  repo: string;
  tag?: string;
  manifestDigest: string;
  /** Config and layers, pullable through this repository. */
  blobs: KnownBlob[];
}

/** Everything the generator aims at: the seeded content, the canaries, this mirror's identity. */
export interface FuzzWorld {
  /** `127.0.0.1:<port>` of a TCP server that must never see a connection. */
  canaryHost: string;
  instanceId: string;
  /** Canary files as traversals from the cache directory (`../canary.txt`). */
  canaryRelative: string[];
  /** Canary files by absolute path (computed at run time, never written down). */
  canaryAbsolute: string[];
  /** A digest whose "blob" exists only next to the cache directory, as a canary. */
  fakeBlobDigest: string;
  images: KnownImage[];
}

export interface FuzzRequest {
  index: number;
  category: string;
  method: string;
  /** Origin-form target as sent; for raw requests, the target of the first request line. */
  path: string;
  headers: Record<string, string | string[]>;
  body?: string;
  /** Sent verbatim on a fresh socket instead of through the pool. */
  raw?: { bytes: Buffer; expectResponse: boolean };
  /** Several requests pipelined on one keep-alive connection: the answer each one must get, in order. */
  chain?: { method: string; path: string }[];
  /** Stevedore-Via names this mirror: 508 LOOP_DETECTED is the right answer. */
  loops: boolean;
  /** A clean pull of seeded content, or of valid-shaped missing content: the status it must get. */
  expect?: { status: number; digest?: string };
}

export const ALL_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

export function rngFor(seed: number, index: number): Rng {
  // A murmur3-style finalizer spreads (seed, index) before mulberry32 takes over.
  let h = (seed ^ Math.imul(index + 1, 0x9e3779b9)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  let a = (h ^ (h >>> 16)) >>> 0;
  const float = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number): number => Math.floor(float() * n);
  return {
    float,
    int,
    pick: <T>(xs: readonly T[]): T => xs[int(xs.length)]!,
    chance: (p: number) => float() < p,
    hex: (n: number) => Array.from({ length: n }, () => '0123456789abcdef'[int(16)]).join(''),
  };
}

/** The ways a client can name a seeded repository: plain, alias or registry prefix, `?ns=`. */
function namings(repo: string): { name: string; ns?: string }[] {
  const forms: { name: string; ns?: string }[] = [
    { name: repo },
    { name: `docker.io/${repo}` },
    { name: `index.docker.io/${repo}` },
    { name: `registry.example.com/${repo}` },
    { name: repo, ns: 'docker.io' },
    { name: repo, ns: 'DOCKER.IO' },
    { name: repo, ns: 'index.docker.io' },
    { name: repo, ns: 'registry.example.com' },
    { name: `docker.io/${repo}`, ns: 'docker.io' },
    { name: repo, ns: '%64ocker.io' },
  ];
  if (repo.startsWith('library/')) forms.push({ name: repo.slice(8) }, { name: repo.slice(8), ns: 'docker.io' });
  return forms;
}

const query = (ns: string | undefined, extra = ''): string => {
  const parts = [ns !== undefined ? `ns=${ns}` : '', extra].filter(Boolean);
  return parts.length ? `?${parts.join('&')}` : '';
};

/** A valid pull of seeded content; `clean` requests carry no hostile header and have a known answer. */
function seeded(rng: Rng, world: FuzzWorld, clean: boolean): Omit<FuzzRequest, 'index' | 'category' | 'loops'> {
  const image = rng.pick(world.images);
  const { name, ns } = rng.pick(namings(image.repo));
  const head = rng.chance(0.3);
  const method = head ? 'HEAD' : 'GET';
  const headers: Record<string, string | string[]> = { accept: ALL_ACCEPT };
  const op = rng.int(10);
  let path: string;
  let expect: FuzzRequest['expect'];
  if (op < 3 && image.tag) {
    path = `/v2/${name}/manifests/${image.tag}${query(ns)}`;
    expect = { status: 200, digest: image.manifestDigest };
  } else if (op < 5) {
    path = `/v2/${name}/manifests/${image.manifestDigest}${query(ns)}`;
    expect = { status: 200, digest: image.manifestDigest };
  } else if (op < 9) {
    const blob = rng.pick(image.blobs);
    path = `/v2/${name}/blobs/${blob.digest}${query(ns)}`;
    expect = { status: 200, digest: blob.digest };
  } else if (rng.chance(0.7)) {
    path = `/v2/${name}/tags/list${query(ns)}`;
    expect = { status: 200 };
  } else {
    // docker-registry 2.8 has no referrers API: the mirror answers from the referrers tag schema (here, an empty index).
    path = `/v2/${name}/referrers/${image.manifestDigest}${query(ns)}`;
    expect = { status: 200 };
  }
  if (!clean) {
    Object.assign(headers, hostileHeaders(rng, world));
    expect = undefined;
  }
  return { method, path, headers, expect };
}

/** Valid-shaped requests for content that does not exist upstream: 404 with the spec's code. */
function missing(rng: Rng, world: FuzzWorld): Omit<FuzzRequest, 'index' | 'category' | 'loops'> {
  const repo = rng.pick(['nosuch/repo', `fuzz/r${rng.hex(6)}`, 'library/nothere', 'a/b/c/d', 'x__y/z-z.q', 'library/alpine/extra']);
  const { name, ns } = rng.pick(namings(repo));
  const image = rng.pick(world.images);
  const kind = rng.int(5);
  const path =
    kind === 0 ? `/v2/${name}/manifests/t${rng.hex(8)}`
    : kind === 1 ? `/v2/${name}/manifests/sha256:${rng.hex(64)}`
    : kind === 2 ? `/v2/${name}/blobs/sha256:${rng.hex(64)}`
    : kind === 3 ? `/v2/${image.repo}/manifests/nosuchtag${rng.int(5)}`
    : `/v2/${name}/tags/list`;
  return { method: rng.chance(0.2) ? 'HEAD' : 'GET', path: `${path}${query(ns)}`, headers: { accept: ALL_ACCEPT }, expect: { status: 404 } };
}

const KINDS = ['manifests', 'blobs', 'tags', 'referrers'] as const;

function referenceFor(rng: Rng, world: FuzzWorld, kind: string): string {
  const image = rng.pick(world.images);
  if (kind === 'tags') return rng.chance(0.8) ? 'list' : rng.pick(['LIST', 'list%00', 'list.json', '..', '%6cist']);
  if (kind === 'manifests') return rng.chance(0.5) ? (image.tag ?? 'latest') : image.manifestDigest;
  return rng.pick(image.blobs).digest;
}

/** A /v2 route whose repository name is hostile. */
function badName(rng: Rng, world: FuzzWorld): Omit<FuzzRequest, 'index' | 'category' | 'loops'> {
  const kind = rng.pick(KINDS);
  const name = rng.pick(hostileNames(rng, world));
  const extra = rng.chance(0.2) ? hostileQuery(rng, world).slice(1) : '';
  return { method: rng.chance(0.25) ? 'HEAD' : 'GET', path: `/v2/${name}/${kind}/${referenceFor(rng, world, kind)}${extra ? `?${extra}` : ''}`, headers: { accept: ALL_ACCEPT } };
}

/** A seeded repository with a hostile tag or digest. */
function badReference(rng: Rng, world: FuzzWorld): Omit<FuzzRequest, 'index' | 'category' | 'loops'> {
  const image = rng.pick(world.images);
  const { name, ns } = rng.pick(namings(image.repo));
  const kind = rng.pick(['manifests', 'manifests', 'blobs', 'blobs', 'referrers', 'tags']);
  const refs = kind === 'manifests' && rng.chance(0.5) ? hostileTags(rng) : hostileDigests(rng, world);
  const tail = kind === 'referrers' && rng.chance(0.3) ? `artifactType=${rng.pick(['', '%00', 'a/b', encodeUnicode('☃'), 'x'.repeat(3000)])}` : '';
  return { method: rng.chance(0.25) ? 'HEAD' : 'GET', path: `/v2/${name}/${kind}/${rng.pick(refs)}${query(ns, tail)}`, headers: { accept: ALL_ACCEPT } };
}

/** A seeded pull with a hostile query string (ns values, repeats, encodings). */
function badQuery(rng: Rng, world: FuzzWorld): Omit<FuzzRequest, 'index' | 'category' | 'loops'> {
  const image = rng.pick(world.images);
  const name = rng.pick([image.repo, `docker.io/${image.repo}`, `registry.example.com/${image.repo}`, `${world.canaryHost}/${image.repo}`]);
  const kind = rng.pick(KINDS);
  return { method: rng.chance(0.25) ? 'HEAD' : 'GET', path: `/v2/${name}/${kind}/${referenceFor(rng, world, kind)}${hostileQuery(rng, world)}`, headers: { accept: ALL_ACCEPT } };
}

const PATH_BITS = [
  'manifests', 'blobs', 'tags', 'list', 'referrers', 'uploads', '_catalog', 'etc', 'passwd', 'index.db', 'instance-id', 'blobs/sha256',
  '.', '..', '...', '%2e', '%2e%2e', '%252e%252e', '%00', 'a%00b', '\\', '..\\..\\', '%5c', '%', '%zz', '%ff%fe', '%c0%af', '%e2%80%ae',
  ';', ';a=b', '~', '$', '{}', '*', '@', ':', '%3a', '+', '!', "'", '(', ')', '[', ']', '|', '^', '`',
];

/** A path made of hostile pieces, under /v2/ or elsewhere. */
function badPath(rng: Rng, world: FuzzWorld): Omit<FuzzRequest, 'index' | 'category' | 'loops'> {
  const image = rng.pick(world.images);
  const prefix = rng.pick(['/v2/', '/v2', '/v2//', '//v2/', '/', '/ui/', '/api/', '/api/jobs/', `/v2/${image.repo}/blobs/`, `/v2/${image.repo}/manifests/`, `/v2/${image.repo}/`, '/V2/', '/v2/%2e%2e/', '/healthz/', '/metrics/']);
  const parts: string[] = [];
  const n = 1 + rng.int(6);
  for (let i = 0; i < n; i++) {
    const r = rng.int(12);
    if (r < 3) parts.push(rng.pick(PATH_BITS));
    else if (r < 5) parts.push(traversalTo(rng, world));
    else if (r === 5) parts.push(rng.pick(image.blobs).digest);
    else if (r === 6) parts.push(encodeUnicode(rng.pick(['é', 'ß', 'ａｄｍｉｎ', '／', '‮', '😀', '\u0000', 'İ', 'ﬀ', '\uFEFF'])));
    else if (r === 7) parts.push(String.fromCharCode(0xa0 + rng.int(0x5f)).repeat(1 + rng.int(3))); // raw latin-1 bytes
    else if (r === 8) parts.push('/'.repeat(2 + rng.int(rng.chance(0.1) ? 3000 : 20)));
    else if (r === 9) parts.push(rng.pick(['a', 'x', '%41', 'A']).repeat(rng.chance(0.3) ? 10_000 + rng.int(2_000) : 1 + rng.int(300)));
    else if (r === 10) parts.push(world.canaryHost);
    else parts.push(rng.hex(1 + rng.int(12)));
  }
  let path = prefix + parts.join(rng.pick(['/', '/', '', '%2f', '\\']));
  if (rng.chance(0.3)) path += rng.pick(['/manifests/latest', `/blobs/${rng.pick(image.blobs).digest}`, '/tags/list', `/manifests/${image.manifestDigest}`]);
  if (rng.chance(0.15)) path += hostileQuery(rng, world);
  if (rng.chance(0.03)) path += `/${'b'.repeat(17_000 + rng.int(8_000))}`; // past Node's 16 KiB header limit: 431
  const method = rng.pick(['GET', 'GET', 'GET', 'HEAD']);
  return { method, path, headers: rng.chance(0.3) ? hostileHeaders(rng, world) : {} };
}

const METHODS = ['PUT', 'POST', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'PROPFIND', 'MKCOL', 'PURGE', 'LINK', 'QUERY', 'SEARCH', 'FOO', 'get', 'Get', 'M-SEARCH', 'X'.repeat(64)];

function badMethod(rng: Rng, world: FuzzWorld): Omit<FuzzRequest, 'index' | 'category' | 'loops'> {
  const method = rng.pick(METHODS);
  const image = rng.pick(world.images);
  const path = rng.pick([
    `/v2/${image.repo}/manifests/${image.tag ?? 'latest'}`, `/v2/${image.repo}/blobs/${rng.pick(image.blobs).digest}`, `/v2/${image.repo}/blobs/uploads/`,
    `/v2/${image.repo}/blobs/uploads/${rng.hex(8)}?digest=sha256:${rng.hex(64)}`, '/v2/', `/v2/${image.repo}/tags/list`, '/api/gc', '/api/warm', '/api/stats', '/ui/', '/healthz', '/', `/v2/${world.canaryHost}/x/manifests/latest`,
  ]);
  const withBody = method !== 'TRACE' && rng.chance(0.5);
  const headers: Record<string, string | string[]> = withBody ? { 'content-type': rng.pick(['application/json', 'application/octet-stream', 'text/plain']) } : {};
  const body = withBody ? rng.pick(['{}', '{"dryRun":true}', 'x'.repeat(rng.int(5000)), JSON.stringify({ images: [`${world.canaryHost}/x:latest`] })]) : undefined;
  return { method, path, headers, ...(body !== undefined ? { body } : {}) };
}

/** The dashboard, the admin API and other non-registry routes, with hostile parameters. */
function otherRoute(rng: Rng, world: FuzzWorld): Omit<FuzzRequest, 'index' | 'category' | 'loops'> {
  const path = rng.pick([
    '/', '/ui', '/ui/', '/ui/index.html', '/ui/app.js', '/ui/style.css', '/ui/vendor-uplot.js', '/ui/%ff', '/ui/%', '/ui/..%2f..%2fpackage.json', '/ui/..%2fcli.ts',
    '/ui/%2e%2e%2f%2e%2e%2fmirror.yml', `/ui/${traversalTo(rng, world)}`, `/ui/${encodeURIComponent(rng.pick(world.canaryAbsolute))}`, '/ui/index.html%00.js', '/ui/.%2e/.%2e/README.md',
    '/api/stats', '/api/upstreams', '/api/images', `/api/images?limit=${rng.pick(['-1', '0', '1e999', 'NaN', '99999999999999999999', '%ff', '1&limit=2'])}`, '/api/jobs',
    `/api/jobs/${rng.pick(['1', '0', '-1', '1.5', '99999999999999999999', '%ff', '%00', 'abc', '1e3', '0x10', '%201'])}`, '/api/', '/api', '/api/../v2/',
    '/healthz', '/healthz?x=%ff', '/favicon.ico', '/v1/', '/v2', '/V2/', '/v2/_catalog', '/v2/_catalog?n=99999', '/.env', '/.git/config', '/server-status',
    '/../../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', '/..%5c..%5cwindows', '/metrics?name[]=x', `/${traversalTo(rng, world)}`,
  ]);
  return { method: rng.chance(0.85) ? 'GET' : 'HEAD', path, headers: rng.chance(0.4) ? hostileHeaders(rng, world) : {} };
}

/** Admin POSTs: warm-ups naming hostile images (an unconfigured host must stay unreachable) and GC. */
function adminPost(rng: Rng, world: FuzzWorld): Omit<FuzzRequest, 'index' | 'category' | 'loops'> {
  const image = rng.pick(world.images);
  const images = rng.pick([
    [`${world.canaryHost}/x:latest`], [`${world.canaryHost}/library/alpine:3.19`], [`http://${world.canaryHost}/x`], [`evil.example/x:1`, `localhost:${world.canaryHost.split(':')[1]}/y`],
    ['../../etc/passwd'], [`alpine@sha256:${rng.hex(64)}`], [`${image.repo}${image.tag ? `:${image.tag}` : `@${image.manifestDigest}`}`], ['UPPER/Case:tag'], [''], ['x'.repeat(600)], [`docker.io/${image.repo}@${image.manifestDigest}`],
  ]);
  const body = rng.pick([
    JSON.stringify({ images, platforms: rng.pick(['all', ['linux/amd64'], ['../..'], 'x']) }),
    JSON.stringify({ job: rng.pick(['nope', '', '../x', 'x'.repeat(100)]) }),
    JSON.stringify({ images, name: rng.pick(['fuzz', '../../x', '']) }),
    '{"images":', '[]', 'null', '"x"', '{"images":[1,2]}', '{"__proto__":{"images":["x"]}}',
  ]);
  const gc = rng.chance(0.3);
  return {
    method: 'POST',
    path: gc ? '/api/gc' : '/api/warm',
    headers: { 'content-type': rng.pick(['application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded']), ...(rng.chance(0.2) ? { origin: 'http://evil.example' } : {}) },
    body: gc ? rng.pick(['{"dryRun":true}', '{"dryRun":"yes"}', '{}', '{']) : body,
  };
}

const CATEGORIES: [string, number, (rng: Rng, world: FuzzWorld) => Omit<FuzzRequest, 'index' | 'category' | 'loops'>][] = [
  ['seeded', 12, (rng, world) => seeded(rng, world, true)],
  ['seeded+headers', 12, (rng, world) => seeded(rng, world, false)],
  ['missing', 4, missing],
  ['name', 14, badName],
  ['reference', 12, badReference],
  ['query', 10, badQuery],
  ['path', 16, badPath],
  ['method', 6, badMethod],
  ['other-route', 6, otherRoute],
  ['admin-post', 0.4, adminPost],
];
const RAW_WEIGHT = 3;
const CHAIN_WEIGHT = 2;
const TOTAL_WEIGHT = CATEGORIES.reduce((sum, [, w]) => sum + w, 0) + RAW_WEIGHT + CHAIN_WEIGHT;

/**
 * Hostile requests one after another on a single keep-alive connection,
 * written at once (pipelined). Every one up to the first whose body cannot
 * be read past must be answered, in order, and the connection then closed.
 */
function keepAliveChain(rng: Rng, world: FuzzWorld): Omit<FuzzRequest, 'index' | 'loops'> {
  const links = keepAliveLinks(rng, world);
  const picked: ChainLink[] = [];
  for (let i = 0, n = 2 + rng.int(5); i < n; i++) {
    const link = rng.pick(links);
    picked.push(link);
    if (link.closes) break;
  }
  if (!picked.at(-1)!.closes) picked.push({ method: 'GET', target: '/v2/', text: 'GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n', closes: true });
  return {
    category: 'keepalive',
    method: picked[0]!.method,
    path: picked[0]!.target,
    headers: {},
    raw: { bytes: Buffer.from(picked.map((l) => l.text).join(''), 'latin1'), expectResponse: true },
    chain: picked.map((l) => ({ method: l.method, path: l.target })),
  };
}

export function generateRequest(seed: number, index: number, world: FuzzWorld): FuzzRequest {
  const rng = rngFor(seed, index);
  let roll = rng.float() * TOTAL_WEIGHT;
  for (const [category, weight, make] of CATEGORIES) {
    roll -= weight;
    if (roll < 0) {
      const made = make(rng, world);
      const via = made.headers['stevedore-via'];
      const loops = typeof via === 'string' && via.split(',').map((s) => s.trim()).includes(world.instanceId);
      return { index, category, loops, ...made };
    }
  }
  if (roll < CHAIN_WEIGHT) return { index, loops: false, ...keepAliveChain(rng, world) };
  const raw = rng.pick(rawRequests(rng, world));
  return { index, category: 'raw', method: raw.method, path: raw.target, headers: {}, raw: { bytes: raw.bytes, expectResponse: raw.expectResponse }, loops: false };
}
