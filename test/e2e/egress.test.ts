// Egress end to end: a Stevedore process reaches its upstreams through a real
// forward proxy (tinyproxy on loopback) from HTTPS_PROXY / HTTP_PROXY or a
// per-upstream `proxy`, honours NO_PROXY and `proxy: none`, keeps the address
// guard on redirects and realms through the proxy, and trusts a private CA
// from `ca:` or NODE_EXTRA_CA_CERTS.
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, request as httpRequest, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import { sha256Digest } from '../support/seed.js';
import { startMirrorProcess, type MirrorProcess, type UpstreamSpec } from '../support/stevedore.js';
import { readDirCopy, skopeo } from '../support/skopeo.js';
import { makeCertificate, type TestCertificate } from '../support/tls.js';
import { get, json } from '../support/http.js';
import { onPath, requirement } from '../support/requirements.js';
import { startTinyproxy, type Tinyproxy } from '../support/tinyproxy.js';

const tinyproxyInstalled = requirement('tinyproxy', (await onPath(['tinyproxy'])) ? undefined : 'tinyproxy is not on PATH (apt-get install tinyproxy)');

const PROXY_USER = 'ci-runner';
const PROXY_PASSWORD = 'pr0xy-s3cret-pw';

let registry: RegistryHandle;
let hub: HubDouble;
let seed: StandardSeed;
let proxy: Tinyproxy;
let authProxy: Tinyproxy;
let privateCa: TestCertificate;
let otherCa: TestCertificate;
let front: Server;
let hostile: Server;
const work = mkdtempSync(join(tmpdir(), 'stevedore-egress-'));

const portOf = (server: Server): number => (server.address() as AddressInfo).port;

function listen(server: Server): Promise<Server> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** HTTPS in front of the registry, with a certificate of a private CA. */
function startTlsFront(target: string, cert: TestCertificate): Promise<Server> {
  const upstream = new URL(target);
  const server = createHttpsServer({ cert: readFileSync(cert.certFile), key: readFileSync(cert.keyFile) }, (req, res) => {
    const up = httpRequest({ host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: { ...req.headers, host: upstream.host } }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  return listen(server);
}

/** An upstream on loopback (allowed: it is the configured host) whose realm is on a name that resolves to loopback. */
function startHostileUpstream(): Promise<Server> {
  return listen(
    createHttpServer((req, res) => {
      if (req.url?.includes('/blobs/')) return void res.writeHead(307, { location: 'http://10.0.0.1/admin', 'content-length': 0 }).end();
      res.writeHead(401, { 'www-authenticate': 'Bearer realm="http://localhost:9/token",service="evil"', 'content-length': 0 }).end();
    }),
  );
}

before(async () => {
  if (tinyproxyInstalled.missing) return;
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
  hub = await startHubDouble({ upstream: registry.url });
  proxy = await startTinyproxy();
  authProxy = await startTinyproxy({ basicAuth: { username: PROXY_USER, password: PROXY_PASSWORD } });
  privateCa = makeCertificate(work, 'private');
  otherCa = makeCertificate(work, 'other');
  front = await startTlsFront(registry.url, privateCa);
  hostile = await startHostileUpstream();
});

after(async () => {
  front?.close();
  hostile?.close();
  await proxy?.stop();
  await authProxy?.stop();
  await hub?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

/** Runs a mirror process for the body, and stops it by its PID whatever happens. */
async function withMirror(upstreams: UpstreamSpec[], env: Record<string, string>, body: (m: MirrorProcess) => Promise<void>): Promise<void> {
  const m = await startMirrorProcess({ port: await freePort(), upstreams, env });
  try {
    await body(m);
  } finally {
    await m.stop();
  }
}

const proxyEnv = (url: string): Record<string, string> => ({ HTTPS_PROXY: url, HTTP_PROXY: url });

/** The hub double as docker.io, with its CDN redirects (to localhost, allowed here). */
function hubUpstream(settings: Record<string, unknown> = {}): UpstreamSpec {
  return { registry: 'docker.io', url: hub.url, settings: { redirectAllow: ['localhost'], ...settings } };
}

/** GETs alpine's manifest and blobs through the mirror: exact digests and sizes. */
async function pullAlpine(m: MirrorProcess): Promise<void> {
  const manifest = await get(`${m.url}/v2/library/alpine/manifests/3.19`, { accept: seed.alpine.manifestMediaType });
  assert.equal(manifest.status, 200, manifest.body.toString());
  assert.equal(sha256Digest(manifest.body), seed.alpine.manifestDigest);
  const blobs = [{ digest: seed.alpine.configDigest, size: seed.alpine.configBytes.length }, ...seed.alpine.layers];
  for (const blob of blobs) {
    const res = await get(`${m.url}/v2/library/alpine/blobs/${blob.digest}`);
    assert.equal(res.status, 200, res.body.toString());
    assert.equal(res.body.length, blob.size);
    assert.equal(sha256Digest(res.body), blob.digest);
  }
}

tinyproxyInstalled.test('with HTTPS_PROXY / HTTP_PROXY, skopeo pulls through the mirror and every upstream request (registry, token, CDN) went through the proxy', async () => {
  hub.redirectBlobs = true;
  const before = proxy.tunnels().length;
  try {
    await withMirror([hubUpstream()], proxyEnv(proxy.url), async (m) => {
      const dest = join(work, 'alpine-env');
      const pulled = await skopeo(['copy', '--src-tls-verify=false', `docker://${m.url.replace('http://', '')}/library/alpine:3.19`, `dir:${dest}`]);
      assert.equal(pulled.code, 0, pulled.stderr);
      const copy = readDirCopy(dest);
      assert.equal(copy.manifestDigest, seed.alpine.manifestDigest);
      assert.deepEqual([...copy.blobs].sort(), [seed.alpine.configDigest, ...seed.alpine.layers.map((l) => l.digest)].sort());
      const tunnels = proxy.tunnels().slice(before);
      assert.ok(tunnels.includes(`127.0.0.1:${hub.port}`), `the registry and its token realm through the proxy: ${tunnels.join(', ')}`);
      assert.ok(tunnels.includes(`localhost:${hub.cdnPort}`), `the CDN redirect through the proxy: ${tunnels.join(', ')}`);
      assert.match(m.logs(), /upstream reached through a proxy/);
    });
  } finally {
    hub.redirectBlobs = false;
  }
});

tinyproxyInstalled.test('NO_PROXY naming the upstream sends it direct: the pull works and the proxy sees nothing', async () => {
  hub.redirectBlobs = true;
  const before = proxy.tunnels().length;
  try {
    await withMirror([hubUpstream()], { ...proxyEnv(proxy.url), NO_PROXY: '127.0.0.1,localhost' }, async (m) => {
      await pullAlpine(m);
      assert.deepEqual(proxy.tunnels().slice(before), []);
    });
  } finally {
    hub.redirectBlobs = false;
  }
});

tinyproxyInstalled.test('a per-upstream proxy URL with credentials works without any environment, and its password never shows in the logs', async () => {
  const proxyUrl = `http://${PROXY_USER}:${PROXY_PASSWORD}@127.0.0.1:${authProxy.port}`;
  const before = authProxy.tunnels().length;
  await withMirror([hubUpstream({ proxy: proxyUrl })], {}, async (m) => {
    await pullAlpine(m);
    assert.ok(authProxy.tunnels().slice(before).includes(`127.0.0.1:${hub.port}`), authProxy.log().slice(-2000));
    const api = await get(`${m.url}/api/upstreams`);
    assert.doesNotMatch(api.body.toString(), new RegExp(PROXY_PASSWORD));
    assert.doesNotMatch(m.logs(), new RegExp(PROXY_PASSWORD));
    assert.match(m.logs(), /upstream reached through a proxy/);
  });
  // A wrong password: a clear 503 naming the proxy's refusal, still without the secret.
  const wrong = `http://${PROXY_USER}:not-${PROXY_PASSWORD}@127.0.0.1:${authProxy.port}`;
  await withMirror([hubUpstream({ proxy: wrong })], {}, async (m) => {
    const res = await get(`${m.url}/v2/library/alpine/manifests/3.19`);
    assert.equal(res.status, 503);
    assert.match(String(json(res).errors?.[0]?.detail), /Proxy response \((401|407)\)/);
    assert.doesNotMatch(res.body.toString() + m.logs(), new RegExp(PROXY_PASSWORD));
  });
});

tinyproxyInstalled.test('proxy: none goes direct although HTTPS_PROXY / HTTP_PROXY are set', async () => {
  const before = proxy.tunnels().length;
  await withMirror([hubUpstream({ proxy: 'none' })], proxyEnv(proxy.url), async (m) => {
    await pullAlpine(m);
    assert.deepEqual(proxy.tunnels().slice(before), []);
    assert.doesNotMatch(m.logs(), /upstream reached through a proxy/);
  });
});

tinyproxyInstalled.test('through the proxy, redirects and token realms to forbidden addresses are still refused before the proxy is asked', async () => {
  hub.redirectBlobs = true;
  const before = proxy.tunnels().length;
  const upstreams: UpstreamSpec[] = [
    // No redirectAllow: the CDN on localhost is off limits.
    { registry: 'docker.io', url: hub.url },
    { registry: 'evil.example', url: `http://127.0.0.1:${portOf(hostile)}` },
  ];
  try {
    await withMirror(upstreams, proxyEnv(proxy.url), async (m) => {
      const blob = seed.alpine.layers[0]!.digest;
      const redirected = await get(`${m.url}/v2/library/alpine/blobs/${blob}`);
      assert.ok(redirected.status === 502 || redirected.status === 503, `a redirect to a name resolving to loopback: ${redirected.status}`);
      const realm = await get(`${m.url}/v2/evil.example/team/app/manifests/v1`);
      assert.ok(realm.status === 502 || realm.status === 503, `a realm on a name resolving to loopback: ${realm.status}`);
      const literal = await get(`${m.url}/v2/evil.example/team/app/blobs/${blob}`);
      assert.ok(literal.status === 502 || literal.status === 503, `a redirect to a private literal address: ${literal.status}`);
      assert.match(m.logs(), /loopback, private, link-local and metadata addresses are off limits/);
      const tunnels = proxy.tunnels().slice(before);
      assert.ok(tunnels.includes(`127.0.0.1:${hub.port}`), 'the configured upstream itself is reached through the proxy');
      assert.deepEqual(tunnels.filter((t) => !t.startsWith('127.0.0.1:')), [], 'nothing forbidden was asked of the proxy');
      assert.ok(!tunnels.includes('127.0.0.1:9'));
    });
  } finally {
    hub.redirectBlobs = false;
  }
});

tinyproxyInstalled.test('an upstream with a private CA: without ca a clear 503 naming the TLS error; with ca, NODE_EXTRA_CA_CERTS, or both with different CAs, the pull works', async () => {
  const upstream = (settings: Record<string, unknown> = {}): UpstreamSpec => ({ registry: 'docker.io', url: `https://127.0.0.1:${portOf(front)}`, settings });
  await withMirror([upstream()], {}, async (m) => {
    const res = await get(`${m.url}/v2/library/alpine/manifests/3.19`);
    assert.equal(res.status, 503);
    assert.match(String(json(res).errors?.[0]?.detail), /UNABLE_TO_VERIFY_LEAF_SIGNATURE unable to verify the first certificate/);
    const alive = await get(`${m.url}/v2/`);
    assert.equal(alive.status, 200, 'the mirror still serves');
  });
  await withMirror([upstream({ ca: privateCa.caFile })], {}, pullAlpine);
  await withMirror([upstream()], { NODE_EXTRA_CA_CERTS: privateCa.caFile }, pullAlpine);
  // `ca` adds to the default CAs, NODE_EXTRA_CA_CERTS among them.
  await withMirror([upstream({ ca: otherCa.caFile })], { NODE_EXTRA_CA_CERTS: privateCa.caFile }, pullAlpine);
  await withMirror([upstream({ ca: otherCa.caFile })], {}, async (m) => {
    const res = await get(`${m.url}/v2/library/alpine/manifests/3.19`);
    assert.equal(res.status, 503, 'another CA is no stand-in');
  });
});

tinyproxyInstalled.test('a private-CA upstream through the proxy: TLS runs inside the tunnel and is checked against ca', async () => {
  const before = proxy.tunnels().length;
  await withMirror([{ registry: 'docker.io', url: `https://127.0.0.1:${portOf(front)}`, settings: { ca: privateCa.caFile } }], proxyEnv(proxy.url), async (m) => {
    await pullAlpine(m);
    assert.ok(proxy.tunnels().slice(before).includes(`127.0.0.1:${portOf(front)}`));
  });
  await withMirror([{ registry: 'docker.io', url: `https://127.0.0.1:${portOf(front)}` }], proxyEnv(proxy.url), async (m) => {
    const res = await get(`${m.url}/v2/library/alpine/manifests/3.19`);
    assert.equal(res.status, 503);
    assert.match(String(json(res).errors?.[0]?.detail), /UNABLE_TO_VERIFY_LEAF_SIGNATURE unable to verify the first certificate/);
  });
});

tinyproxyInstalled.test('through the proxy the endpoint timeouts still apply: a silent proxy is a connect timeout, a slow upstream a headers timeout', async () => {
  // Accepts connections and never answers the CONNECT.
  const silent = createNetServer(() => undefined);
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  try {
    const started = Date.now();
    await withMirror([hubUpstream({ proxy: `http://127.0.0.1:${(silent.address() as AddressInfo).port}` })], {}, async (m) => {
      const res = await get(`${m.url}/v2/library/alpine/manifests/3.19`);
      assert.equal(res.status, 503);
      assert.match(String(json(res).errors?.[0]?.detail), /UND_ERR_CONNECT_TIMEOUT .*through the proxy, timeout 2000ms/);
    });
    assert.ok(Date.now() - started < 20_000);
  } finally {
    silent.close();
  }
  hub.delayNext(1, 4_000, 'manifestGet');
  await withMirror([{ ...hubUpstream(), timeouts: { headers: '1s' } }], proxyEnv(proxy.url), async (m) => {
    const res = await get(`${m.url}/v2/library/alpine/manifests/3.19`);
    assert.equal(res.status, 503);
    assert.match(String(json(res).errors?.[0]?.detail), /Headers Timeout/i);
  });
  hub.clearFaults();
});
