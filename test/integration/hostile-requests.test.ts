// What a hostile fuzz found, as regression tests: requests that hung a
// keep-alive connection, names that looked like hosts forwarded to Docker Hub,
// a Unicode ns that crashed the header write, and a padded mirror chain that
// hid a loop. Raw sockets where no client library would send such bytes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { rawExchange } from '../support/raw-http.js';
import { get, json } from '../support/http.js';

let registry: RegistryHandle;
let hub: HubDouble;
let mirror: TestMirror;
let seed: StandardSeed;
let port: number;
const INSTANCE = 'stevedore-under-test';

before(async () => {
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
  hub = await startHubDouble({ upstream: registry.url });
  mirror = await startMirror({
    instanceId: INSTANCE,
    upstreams: [
      { registry: 'docker.io', url: hub.url },
      { registry: 'registry.example.com', url: registry.url },
    ],
  });
  port = Number(new URL(mirror.url).port);
});

after(async () => {
  await mirror?.stop();
  await hub?.stop();
  await registry?.stop();
});

test('a GET or HEAD declaring a huge body it never sends is answered, then the connection is closed instead of hanging', async () => {
  for (const method of ['GET', 'HEAD']) {
    const answer = await rawExchange(port, [
      `${method} /v2/ HTTP/1.1\r\nHost: mirror\r\nContent-Length: 99999999999999\r\n\r\n`,
      // Taken for body bytes if the server kept reading: this request must not be answered on this connection.
      'GET /v2/library/alpine/manifests/3.19 HTTP/1.1\r\nHost: mirror\r\n\r\n',
    ], { waitMs: 15_000 });
    assert.equal(answer.responses.length, 1, `${method}: one answer`);
    assert.equal(answer.status, 200, method);
    assert.match(answer.headers, /\r\nconnection: close/);
    assert.ok(answer.closed, `${method}: the server closed the connection rather than reading an endless body`);
  }
  const chunked = await rawExchange(port, ['GET /v2/ HTTP/1.1\r\nHost: mirror\r\nTransfer-Encoding: chunked\r\n\r\n'], { waitMs: 15_000 });
  assert.equal(chunked.status, 200);
  assert.ok(chunked.closed, 'an unbounded chunked body gets the same treatment');
});

test('a small unread body is discarded and the keep-alive connection serves the next request', async () => {
  const answer = await rawExchange(port, [
    'GET /v2/ HTTP/1.1\r\nHost: mirror\r\nContent-Length: 5\r\n\r\nhello',
    `HEAD /v2/library/alpine/manifests/3.19 HTTP/1.1\r\nHost: mirror\r\nAccept: ${seed.alpine.manifestMediaType}\r\nConnection: close\r\n\r\n`,
  ], { expect: 2, waitMs: 15_000 });
  assert.equal(answer.responses.length, 2);
  assert.equal(answer.responses[0]!.status, 200);
  assert.doesNotMatch(answer.responses[0]!.headers, /connection: close/);
  assert.equal(answer.responses[1]!.status, 200);
  assert.match(answer.responses[1]!.headers, new RegExp(`docker-content-digest: ${seed.alpine.manifestDigest}`));
});

test('names whose first component is a host that is not configured get 404 NAME_UNKNOWN and nothing goes upstream', async () => {
  hub.resetStats();
  const paths = [
    '/v2/169.254.169.254/latest/manifests/x',
    '/v2/169.254.169.254/latest/manifests/x?ns=docker.io',
    '/v2/metadata.google.internal/computeMetadata/manifests/v1?ns=docker.io',
    '/v2/localhost:6379/x/manifests/latest',
    '/v2/docker.io/169.254.169.254/latest/manifests/x',
    `/v2/evil.example/library/alpine/blobs/${seed.alpine.configDigest}?ns=docker.io`,
  ];
  for (const path of paths) {
    const res = await get(`${mirror.url}${path}`);
    assert.equal(res.status, 404, path);
    assert.equal(json(res).errors?.[0]?.code, 'NAME_UNKNOWN', path);
  }
  assert.equal(hub.stats().requests.length, 0, 'no request reached Docker Hub');
  // A registry prefix naming the configured registry itself is still understood.
  const prefixed = await get(`${mirror.url}/v2/docker.io/library/alpine/manifests/3.19?ns=docker.io`, { accept: seed.alpine.manifestMediaType });
  assert.equal(prefixed.status, 200);
  assert.equal(prefixed.headers['docker-content-digest'], seed.alpine.manifestDigest);
});

test('ns must be an ASCII host name: a Kelvin sign that lowercases to docker.io gets 400, and the resolved registry is echoed', async () => {
  hub.resetStats();
  const kelvin = await get(`${mirror.url}/v2/library/alpine/manifests/3.19?ns=doc%E2%84%AAer.io`);
  assert.equal(kelvin.status, 400);
  assert.equal(json(kelvin).errors?.[0]?.code, 'NAME_INVALID');
  assert.equal(hub.stats().requests.length, 0);
  const alias = await get(`${mirror.url}/v2/library/alpine/manifests/3.19?ns=Docker.IO`, { accept: seed.alpine.manifestMediaType });
  assert.equal(alias.status, 200);
  assert.equal(alias.headers['oci-namespace'], 'docker.io', 'the registry the mirror resolved, not what the client wrote');
});

test('a Stevedore-Via chain longer than 16 hops is refused with 400, so padding cannot hide a loop', async () => {
  hub.resetStats();
  const padded = [...Array.from({ length: 16 }, (_, i) => `junk-${i}`), INSTANCE].join(', ');
  const res = await get(`${mirror.url}/v2/library/alpine/manifests/3.19`, { 'stevedore-via': padded });
  assert.equal(res.status, 400);
  assert.equal(json(res).errors?.[0]?.code, 'UNSUPPORTED');
  const loop = await get(`${mirror.url}/v2/library/alpine/manifests/3.19`, { 'stevedore-via': `a, b, ${INSTANCE}` });
  assert.equal(loop.status, 508);
  assert.equal(hub.stats().requests.length, 0);
  const sane = await get(`${mirror.url}/v2/library/alpine/manifests/3.19`, { 'stevedore-via': 'edge-1, edge-2', accept: seed.alpine.manifestMediaType });
  assert.equal(sane.status, 200);
});
