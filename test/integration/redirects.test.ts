// A hostile upstream tries to send the mirror to cloud metadata addresses, by
// redirect or by token realm, or to a non-HTTP scheme. Nothing leaves loopback:
// the guard refuses before any connection is attempted.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { assertAllowedTarget, isForbiddenAddress, TargetAllowance } from '../../src/upstream/address-guard.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { get, json } from '../support/http.js';

const DIGEST = `sha256:${'ab'.repeat(32)}`;
let redirectTo = '';
let requests: string[] = [];
let redirecting: Server;
let realmServer: Server;
const mirrors: TestMirror[] = [];

function serve(handler: Parameters<typeof createServer>[1]): Promise<Server> {
  const server = createServer(handler);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}
const urlOf = (server: Server): string => `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

before(async () => {
  redirecting = await serve((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    if (req.url === '/v2/') return void res.writeHead(200).end('{}');
    res.writeHead(307, { location: redirectTo, 'content-length': 0 }).end();
  });
  // Challenges with a token realm on the metadata address.
  realmServer = await serve((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    res.writeHead(401, { 'www-authenticate': 'Bearer realm="http://169.254.169.254/latest/meta-data/iam",service="evil"', 'content-length': 0 }).end();
  });
});

after(async () => {
  for (const m of mirrors) await m.stop();
  redirecting?.close();
  realmServer?.close();
});

async function mirrorOf(url: string, settings: Record<string, unknown> = {}): Promise<TestMirror> {
  const m = await startMirror({ upstreams: [{ registry: 'evil.example', url, settings: { maxConcurrentFetches: 4, ...settings } }] });
  mirrors.push(m);
  return m;
}

for (const [what, location] of [
  ['the instance metadata address', 'http://169.254.169.254/latest/meta-data/iam/security-credentials/'],
  ['an IPv6 link-local address', 'http://[fe80::1]/blob'],
  ['the IPv4-mapped metadata address', 'http://[::ffff:169.254.169.254]/x'],
  ['another loopback address', 'http://127.0.0.2:6379/x'],
  ['IPv6 loopback', 'http://[::1]:2375/containers/json'],
  ['an RFC 1918 address', 'http://10.0.0.1/admin'],
  ['another RFC 1918 address', 'http://192.168.1.1/'],
  ['a unique local IPv6 address', 'http://[fd12:3456::1]/'],
  ['a name that resolves to loopback', 'http://localhost:9/x'],
] as const) {
  test(`a blob redirect to ${what} is refused with a clear error, without connecting`, async () => {
    const m = await mirrorOf(urlOf(redirecting));
    redirectTo = location;
    requests = [];
    const res = await get(`${m.url}/v2/team/app/blobs/${DIGEST}`);
    assert.ok(res.status === 502 || res.status === 503, `status ${res.status}`);
    assert.ok(json(res).errors?.[0]?.code, 'an OCI error body');
    // Refused before connecting: a connect attempt would have shown as a timeout or a refusal in the log.
    assert.doesNotMatch(m.rawLogs(), /ETIMEDOUT|ECONNREFUSED|connect timeout/i);
    assert.match(m.rawLogs(), /loopback, private, link-local and metadata addresses are off limits/);
    assert.ok(requests.some((r) => r.includes('/blobs/')), 'the upstream was asked and redirected');
  });
}

test('a redirect to a non-HTTP scheme is refused', async () => {
  const m = await mirrorOf(urlOf(redirecting));
  redirectTo = 'file:///etc/passwd';
  const res = await get(`${m.url}/v2/team/app/blobs/${DIGEST}`);
  assert.ok(res.status === 502 || res.status === 503, `status ${res.status}`);
  assert.doesNotMatch(res.body.toString(), /root:/);
  assert.match(m.rawLogs(), /unsupported scheme file:/);
});

test('a token realm on the metadata address is refused before any connection', async () => {
  const m = await mirrorOf(urlOf(realmServer));
  requests = [];
  const res = await get(`${m.url}/v2/team/app/manifests/latest`);
  assert.ok(res.status >= 500 && res.status <= 503, `status ${res.status}`);
  assert.match(m.rawLogs(), /loopback, private, link-local and metadata addresses are off limits/);
  // The registry was asked and challenged; the realm's address was never tried, so nothing else is there to see.
  assert.ok(requests.length >= 1 && requests.every((r) => r.startsWith('GET /v2/')), requests.join(', '));
});

test('redirectAllow lets redirects reach a listed private host, and only that one', async () => {
  let reached = 0;
  const inside = createServer((_req, res) => {
    reached += 1;
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}');
  });
  await new Promise<void>((resolve) => inside.listen(0, '127.0.0.2', resolve));
  const port = (inside.address() as AddressInfo).port;
  try {
    redirectTo = `http://127.0.0.2:${port}/blobs/x`;
    const refused = await mirrorOf(urlOf(redirecting));
    assert.ok((await get(`${refused.url}/v2/team/app/blobs/${DIGEST}`)).status >= 500);
    assert.equal(reached, 0, 'not listed: nothing reached it');
    const listed = await mirrorOf(urlOf(redirecting), { redirectAllow: ['127.0.0.2/32'] });
    const res = await get(`${listed.url}/v2/team/app/blobs/${DIGEST}`);
    assert.equal(res.status, 404, 'the listed host answered');
    assert.equal(reached, 1);
    redirectTo = `http://127.0.0.3:${port}/blobs/x`;
    assert.ok((await get(`${listed.url}/v2/team/app/blobs/${`sha256:${'cd'.repeat(32)}`}`)).status >= 500, 'a neighbour of the listed host is still refused');
  } finally {
    inside.close();
  }
});

test('the guard knows loopback, private, link-local and metadata ranges, and lets the configured host, listed ones and public addresses through', () => {
  for (const address of ['169.254.169.254', '169.254.0.1', 'fe80::1', 'fd00:ec2::254', '100.100.100.200', '0.0.0.0', '::ffff:169.254.169.254',
    '127.0.0.1', '127.1.2.3', '::1', '10.0.0.5', '172.16.0.1', '172.31.255.255', '192.168.1.1', 'fc00::1', 'fd12::1', '100.64.0.1', '::ffff:127.0.0.1', '::ffff:10.1.1.1']) {
    assert.equal(isForbiddenAddress(address), true, address);
  }
  for (const address of ['8.8.8.8', '172.32.0.1', '100.128.0.1', '2001:db8::1', '::ffff:8.8.8.8', 'registry-1.docker.io']) {
    assert.equal(isForbiddenAddress(address), false, address);
  }
  assert.throws(() => assertAllowedTarget(new URL('http://169.254.169.254/'), new TargetAllowance('registry.internal')), /off limits/);
  // An endpoint configured on such an address is the operator's choice.
  assert.doesNotThrow(() => assertAllowedTarget(new URL('http://169.254.10.10/v2/'), new TargetAllowance('169.254.10.10')));
  const listed = new TargetAllowance('registry.internal', ['10.20.0.0/16', 'blobs.internal', 'fd00:1::5']);
  assert.doesNotThrow(() => assertAllowedTarget(new URL('http://10.20.3.4/x'), listed));
  assert.doesNotThrow(() => assertAllowedTarget(new URL('http://[fd00:1::5]/x'), listed));
  assert.throws(() => assertAllowedTarget(new URL('http://10.21.0.1/x'), listed), /off limits/);
  assert.ok(listed.host('BLOBS.internal'));
});
