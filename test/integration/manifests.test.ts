// Manifests and routing against a real upstream behind the Docker Hub double:
// tag TTL, HEAD revalidation, Accept negotiation, stale serving, 429s, ns= and
// path prefixes, referrers without an upstream API, and bad input.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { MediaTypes, pushBlob, pushImage, pushIndex, putManifest, sha256Digest, type PushedImage, type PushedIndex } from '../support/seed.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { get, json, type Fetched } from '../support/http.js';
import { parseDigest } from '../../src/oci/digest.js';

let registry: RegistryHandle;
let hub: HubDouble;
let mirror: TestMirror;
let revalidating: TestMirror;
let app: PushedImage;
let multi: PushedIndex;
let list: PushedIndex;

const ALL = [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerList, MediaTypes.dockerManifest].join(', ');

before(async () => {
  registry = await startRegistry();
  app = await pushImage(registry.url, 'acme/app', 'v1', { layers: [2000, 3000], format: 'oci' });
  multi = await pushIndex(registry.url, 'acme/multi', 'latest', {
    platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }],
    format: 'oci',
    layers: [1000],
  });
  list = await pushIndex(registry.url, 'acme/list', 'latest', {
    platforms: [{ os: 'linux', arch: 'amd64' }, { os: 'linux', arch: 'arm64' }],
    format: 'docker',
    layers: [1000],
  });
  for (const tag of ['a', 'b', 'c', 'd', 'e']) await pushImage(registry.url, 'acme/many', tag, { layers: [100], format: 'docker' });
  hub = await startHubDouble({ upstream: registry.url });
  const upstreams = [
    { registry: 'docker.io', url: hub.url },
    // A second registry on the same real upstream, reached by ns= or a path prefix.
    { registry: 'registry.example.com', url: registry.url },
  ];
  mirror = await startMirror({ upstreams });
  revalidating = await startMirror({ upstreams, cache: { tagTtl: '0s', revalidateTimeout: '1s' } });
});

after(async () => {
  await mirror?.stop();
  await revalidating?.stop();
  await hub?.stop();
  await registry?.stop();
});

/** node:http sends the path as written: no dot-segment normalization. */
function raw(base: string, method: string, path: string): Promise<Fetched> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${base}/`, { method, path }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

const errorCode = (f: Fetched): string | undefined => json(f).errors?.[0]?.code;

test('manifest by tag: headers, bytes preserved, and no upstream request within tagTtl', async () => {
  hub.resetStats();
  const first = await get(`${mirror.url}/v2/acme/app/manifests/v1`, { accept: ALL });
  assert.equal(first.status, 200);
  assert.equal(first.headers['content-type'], MediaTypes.ociManifest);
  assert.equal(first.headers['docker-content-digest'], app.manifestDigest);
  assert.equal(first.headers['content-length'], String(app.manifestBytes.length));
  assert.equal(first.headers['docker-distribution-api-version'], 'registry/2.0');
  assert.ok(first.body.equals(app.manifestBytes), 'byte for byte');
  assert.equal(hub.stats().manifestGet, 1);
  hub.resetStats();
  const second = await get(`${mirror.url}/v2/acme/app/manifests/v1`, { accept: ALL });
  const head = await get(`${mirror.url}/v2/acme/app/manifests/v1`, { accept: ALL }, 'HEAD');
  const byDigest = await get(`${mirror.url}/v2/acme/app/manifests/${app.manifestDigest}`, { accept: ALL });
  assert.ok(second.body.equals(app.manifestBytes));
  assert.equal(head.status, 200);
  assert.equal(head.body.length, 0);
  assert.equal(head.headers['content-length'], String(app.manifestBytes.length));
  assert.equal(head.headers['docker-content-digest'], app.manifestDigest);
  assert.ok(byDigest.body.equals(app.manifestBytes));
  const s = hub.stats();
  assert.equal(s.manifestGet + s.manifestHead + s.blobGet + s.tokens, 0, 'nothing upstream');
});

test('after tagTtl a tag is revalidated with HEAD; GET only when the digest changed', async () => {
  const url = `${revalidating.url}/v2/acme/moving/manifests/stable`;
  const v1 = await pushImage(registry.url, 'acme/moving', 'stable', { layers: [500], format: 'docker', seed: 'moving-1' });
  assert.equal((await get(url, { accept: ALL })).headers['docker-content-digest'], v1.manifestDigest);
  hub.resetStats();
  const again = await get(url, { accept: ALL });
  assert.equal(again.headers['docker-content-digest'], v1.manifestDigest);
  assert.equal(hub.stats().manifestHead, 1, 'revalidated with a HEAD');
  assert.equal(hub.stats().manifestGet, 0, 'no GET when unchanged');
  const v2 = await pushImage(registry.url, 'acme/moving', 'stable', { layers: [600], format: 'docker', seed: 'moving-2' });
  hub.resetStats();
  const moved = await get(url, { accept: ALL });
  assert.equal(moved.headers['docker-content-digest'], v2.manifestDigest);
  assert.ok(moved.body.equals(v2.manifestBytes));
  assert.equal(hub.stats().manifestHead, 1);
  assert.equal(hub.stats().manifestGet, 1, 'one GET for the new digest');
  // The old digest stays pullable from the cache: digests are immutable.
  hub.resetStats();
  const old = await get(`${revalidating.url}/v2/acme/moving/manifests/${v1.manifestDigest}`, { accept: ALL });
  assert.ok(old.body.equals(v1.manifestBytes));
  assert.equal(hub.stats().manifestGet + hub.stats().manifestHead, 0);
});

test('Accept is honoured: the answer is what the upstream gives for that Accept, never an unlisted type', async () => {
  const accepts = [
    ALL,
    MediaTypes.ociIndex,
    `${MediaTypes.dockerManifest}, ${MediaTypes.dockerList}`,
    MediaTypes.dockerManifest,
  ];
  for (const repo of ['acme/multi', 'acme/list']) {
    for (const accept of accepts) {
      const direct = await get(`${registry.url}/v2/${repo}/manifests/latest`, { accept });
      const viaMirror = await get(`${mirror.url}/v2/${repo}/manifests/latest`, { accept });
      const upstreamType = String(direct.headers['content-type']);
      if (direct.status !== 200 || !accept.split(', ').includes(upstreamType)) {
        // The upstream cannot meet this Accept (404, or a converted schema 1 manifest).
        assert.equal(viaMirror.status, 404, `${repo} with ${accept}: upstream gave ${direct.status} ${upstreamType}`);
        assert.equal(errorCode(viaMirror), 'MANIFEST_UNKNOWN');
        continue;
      }
      const type = String(viaMirror.headers['content-type']);
      assert.ok(accept.split(', ').includes(type), `${repo}: ${type} is listed in "${accept}"`);
      assert.equal(viaMirror.headers['docker-content-digest'], direct.headers['docker-content-digest'], `${repo} with ${accept}`);
      assert.ok(viaMirror.body.equals(direct.body));
    }
  }
  const index = await get(`${mirror.url}/v2/acme/multi/manifests/latest`, { accept: ALL });
  assert.equal(index.headers['docker-content-digest'], multi.indexDigest);
  const child = multi.children['linux/arm64']!;
  const byDigest = await get(`${mirror.url}/v2/acme/multi/manifests/${child.manifestDigest}`, { accept: MediaTypes.dockerList });
  assert.equal(byDigest.status, 404, 'a cached manifest is not served to a client that does not accept its type');
  assert.equal(errorCode(byDigest), 'MANIFEST_UNKNOWN');
  assert.equal(list.indexMediaType, MediaTypes.dockerList);
});

test('one endpoint, two registries: ?ns= and the path prefix select configured upstreams only', async () => {
  hub.resetStats();
  const viaNs = await get(`${mirror.url}/v2/acme/app/manifests/v1?ns=registry.example.com`, { accept: ALL });
  assert.equal(viaNs.status, 200);
  assert.equal(viaNs.headers['oci-namespace'], 'registry.example.com');
  assert.ok(viaNs.body.equals(app.manifestBytes));
  const viaPrefix = await get(`${mirror.url}/v2/registry.example.com/acme/app/manifests/v1`, { accept: ALL });
  assert.equal(viaPrefix.status, 200);
  assert.ok(viaPrefix.body.equals(app.manifestBytes));
  const blob = await get(`${mirror.url}/v2/registry.example.com/acme/app/blobs/${app.layers[0]!.digest}`);
  assert.equal(blob.status, 200);
  assert.equal(hub.stats().manifestGet, 0, 'those went to the second registry, not the hub');
  const hubNs = await get(`${mirror.url}/v2/acme/many/manifests/b?ns=docker.io`, { accept: ALL });
  assert.equal(hubNs.status, 200);
  assert.equal(hubNs.headers['oci-namespace'], 'docker.io');
  for (const path of ['/v2/acme/app/manifests/v1?ns=evil.example.org', '/v2/evil.example.org/acme/app/manifests/v1', '/v2/localhost/acme/app/manifests/v1', '/v2/127.0.0.1:1/acme/app/manifests/v1']) {
    const res = await get(`${mirror.url}${path}`, { accept: ALL });
    assert.equal(res.status, 404, path);
    assert.equal(errorCode(res), 'NAME_UNKNOWN', path);
  }
});

test('referrers: an upstream without the API and without a referrers tag gives an empty index; a bad digest is refused', async () => {
  const res = await get(`${mirror.url}/v2/acme/app/referrers/${app.manifestDigest}`);
  assert.equal(res.status, 200);
  assert.equal(res.headers['content-type'], 'application/vnd.oci.image.index.v1+json');
  assert.equal(res.headers['stevedore-referrers-source'], 'tag-schema');
  assert.equal(res.headers['oci-filters-applied'], undefined);
  assert.deepEqual(JSON.parse(res.body.toString()), { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] });
  const bad = await get(`${mirror.url}/v2/acme/app/referrers/sha256:xyz`);
  assert.equal(bad.status, 400);
  assert.equal(errorCode(bad), 'DIGEST_INVALID');
});

test('bad input: clear OCI errors, never a 500, and nothing sent upstream', async () => {
  hub.resetStats();
  const long = 'a'.repeat(256);
  const cases: [string, string, number, string][] = [
    ['GET', '/v2/../../etc/passwd/manifests/latest', 400, 'NAME_INVALID'],
    ['GET', '/v2/%2e%2e/%2e%2e/etc/manifests/latest', 400, 'NAME_INVALID'],
    ['GET', '/v2/acme%2fapp/manifests/v1', 400, 'NAME_INVALID'],
    ['GET', '/v2/acme/app/manifests/..%2f..%2fetc', 404, 'MANIFEST_UNKNOWN'],
    ['GET', '/v2/acme/app/manifests/.hidden', 404, 'MANIFEST_UNKNOWN'],
    ['GET', `/v2/${long}/manifests/latest`, 400, 'NAME_INVALID'],
    ['GET', '/v2/UPPER/manifests/latest', 400, 'NAME_INVALID'],
    ['GET', '/v2/acme/app/blobs/sha256:../../etc/passwd', 404, 'UNSUPPORTED'],
    ['GET', '/v2/acme/app/blobs/sha256:zzzz', 400, 'DIGEST_INVALID'],
    ['GET', `/v2/acme/app/blobs/md5:${'a'.repeat(32)}`, 400, 'DIGEST_INVALID'],
    ['GET', `/v2/acme/app/blobs/sha256:${'A'.repeat(64)}`, 400, 'DIGEST_INVALID'],
    ['GET', `/v2/acme/app/manifests/sha256:${'a'.repeat(63)}`, 400, 'DIGEST_INVALID'],
    ['GET', '/v2/acme/app/manifests/v1?ns=a&ns=b', 400, 'NAME_INVALID'],
    ['GET', '/v2/_catalog', 404, 'UNSUPPORTED'],
    ['GET', '/v2/acme/app/tags/other', 404, 'UNSUPPORTED'],
    ['PUT', '/v2/acme/app/manifests/v1', 405, 'UNSUPPORTED'],
    ['DELETE', `/v2/acme/app/blobs/sha256:${'a'.repeat(64)}`, 405, 'UNSUPPORTED'],
    ['POST', '/v2/acme/app/blobs/uploads/', 405, 'UNSUPPORTED'],
    ['PATCH', '/v2/acme/app/blobs/uploads/123', 405, 'UNSUPPORTED'],
  ];
  for (const [method, path, status, code] of cases) {
    const res = await raw(mirror.url, method, path);
    assert.equal(res.status, status, `${method} ${path}`);
    assert.equal(errorCode(res), code, `${method} ${path}`);
    assert.match(String(res.headers['content-type']), /application\/json/);
  }
  const s = hub.stats();
  assert.equal(s.manifestGet + s.manifestHead + s.blobGet + s.blobHead + s.referrers + s.tokens + s.other, 0);
});

test('an unknown tag or blob upstream is a 404 with the spec error code', async () => {
  const tag = await get(`${mirror.url}/v2/acme/app/manifests/nope`, { accept: ALL });
  assert.equal(tag.status, 404);
  assert.equal(errorCode(tag), 'MANIFEST_UNKNOWN');
  const blob = await get(`${mirror.url}/v2/acme/app/blobs/sha256:${'0'.repeat(64)}`);
  assert.equal(blob.status, 404);
  assert.equal(errorCode(blob), 'BLOB_UNKNOWN');
});

test('an upstream manifest over the size limit is a 502, and nothing is cached', async () => {
  const small = await startMirror({ upstreams: [{ registry: 'docker.io', url: hub.url }], cache: { maxManifestSize: '200B' } });
  try {
    const res = await get(`${small.url}/v2/acme/app/manifests/v1`, { accept: ALL });
    assert.equal(res.status, 502);
    assert.equal(errorCode(res), 'MANIFEST_UNKNOWN');
    assert.match(String(json(res).errors?.[0]?.detail), /over the 200-byte limit/);
    assert.equal(small.stevedore.mirror.cache.index.totals().blobs, 0);
  } finally {
    await small.stop();
  }
});

test('found by the fuzz: HEAD of tags/list answers without crashing; a client naming no manifest type gets a modern manifest; an overlong name after library/ is refused', async () => {
  const head = await get(`${mirror.url}/v2/acme/many/tags/list`, {}, 'HEAD');
  assert.equal(head.status, 200);
  assert.equal(head.body.length, 0);
  assert.equal((await get(`${mirror.url}/v2/`)).status, 200, 'still serving');

  // No Accept, a wildcard, or only application/json: distribution would convert to schema 1 for such clients.
  for (const accept of [undefined, '*/*', 'application/json']) {
    const res = await get(`${mirror.url}/v2/acme/app/manifests/v1`, accept ? { accept } : {});
    assert.equal(res.status, 200, `Accept: ${accept}`);
    assert.equal(res.headers['content-type'], app.manifestMediaType);
    assert.equal(res.headers['docker-content-digest'], app.manifestDigest);
  }

  hub.resetStats();
  const long = await get(`${mirror.url}/v2/${'a'.repeat(250)}/manifests/latest`);
  assert.equal(long.status, 400);
  assert.equal(json(long).errors?.[0]?.code, 'NAME_INVALID');
  assert.equal(hub.stats().requests.length, 0, 'never sent upstream');
});

test('found by the fuzz: upstream 500s with a registry error body are not endpoint failures, so clients cannot open the circuit', async () => {
  const digestOfLayer = app.layers[0]!.digest;
  for (let i = 0; i < 5; i++) {
    // distribution answers a manifest GET for a layer's digest with 500.
    const res = await get(`${mirror.url}/v2/acme/app/manifests/${digestOfLayer}`, { accept: ALL });
    assert.ok(res.status >= 400, `status ${res.status}`);
  }
  const endpoint = mirror.stevedore.mirror.upstreams()[0]!.endpoints[0]!;
  assert.equal(endpoint.circuit, 'closed');
  const fine = await get(`${mirror.url}/v2/acme/multi/manifests/latest`, { accept: ALL });
  assert.equal(fine.status, 200);
});

test('a Content-Type that contradicts the document\'s own mediaType is refused with 502, and nothing is cached', async () => {
  const liar = await pushImage(registry.url, 'acme/liar', 'v1', { layers: [500], format: 'oci' });
  hub.lieAboutContentType((r) => r.path.startsWith('/v2/acme/liar/manifests/'), MediaTypes.dockerManifest);
  try {
    for (const reference of ['v1', liar.manifestDigest]) {
      const res = await get(`${mirror.url}/v2/acme/liar/manifests/${reference}`, { accept: ALL });
      assert.equal(res.status, 502, reference);
      assert.match(String(json(res).errors?.[0]?.detail), /application\/vnd\.oci\.image\.manifest\.v1\+json document as application\/vnd\.docker\.distribution\.manifest\.v2\+json/);
    }
    assert.equal(mirror.stevedore.cache.lookupBlob(parseDigest(liar.manifestDigest)), undefined);
  } finally {
    hub.clearFaults();
  }
});

test('a manifest without its own mediaType keeps the type it was first stored with; a later answer cannot overwrite it', async () => {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  // No mediaType field: the OCI spec allows it, so the registry's Content-Type is all there is.
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, config: { mediaType: MediaTypes.ociConfig, digest: sha256Digest(config), size: config.length }, layers: [] }));
  for (const repo of ['acme/plain-a', 'acme/plain-b']) {
    await pushBlob(registry.url, repo, config);
    await putManifest(registry.url, repo, 'v1', MediaTypes.ociManifest, bytes);
  }
  const digest = sha256Digest(bytes);
  const first = await get(`${mirror.url}/v2/acme/plain-a/manifests/v1`, { accept: ALL });
  assert.equal(first.status, 200);
  assert.equal(first.headers['content-type'], MediaTypes.ociManifest);
  hub.lieAboutContentType((r) => r.path.startsWith('/v2/acme/plain-b/manifests/'), MediaTypes.dockerManifest);
  try {
    const second = await get(`${mirror.url}/v2/acme/plain-b/manifests/v1`, { accept: ALL });
    assert.equal(second.status, 200);
    assert.equal(second.headers['docker-content-digest'], digest);
    assert.equal(second.headers['content-type'], MediaTypes.ociManifest, 'the stored type, not the later answer');
  } finally {
    hub.clearFaults();
  }
  const byDigest = await get(`${mirror.url}/v2/acme/plain-a/manifests/${digest}`, { accept: ALL });
  assert.equal(byDigest.headers['content-type'], MediaTypes.ociManifest);
  assert.equal(mirror.stevedore.cache.lookupBlob(parseDigest(digest))?.mediaType, MediaTypes.ociManifest);
});
