// TLS end to end: skopeo verifies Stevedore's certificate against a test CA,
// and SIGHUP swaps the certificate without dropping open connections.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as connectTcp, type Socket } from 'node:net';
import { connect, type TLSSocket } from 'node:tls';
import { Agent, request } from 'undici';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { seedStandard, type StandardSeed } from '../support/seed-standard.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { readDirCopy, skopeo } from '../support/skopeo.js';
import { makeCertificate, type TestCertificate } from '../support/tls.js';
import { get } from '../support/http.js';
import { waitFor } from '../support/wait.js';

let registry: RegistryHandle;
let mirror: MirrorProcess;
let seed: StandardSeed;
let first: TestCertificate;
let second: TestCertificate;
let plainPort: number;
const work = mkdtempSync(join(tmpdir(), 'stevedore-tls-'));
const served = { cert: join(work, 'served.crt'), key: join(work, 'served.key') };
const PER_CLIENT = 4;

function serve(cert: TestCertificate): void {
  copyFileSync(cert.certFile, served.cert);
  copyFileSync(cert.keyFile, served.key);
}

/** The fingerprint of the certificate a fresh TLS connection is shown. */
function presented(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket: TLSSocket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const fingerprint = socket.getPeerX509Certificate()?.fingerprint256 ?? '';
      socket.end();
      resolve(fingerprint);
    });
    socket.once('error', reject);
  });
}

before(async () => {
  registry = await startRegistry();
  seed = await seedStandard(registry.url);
  first = makeCertificate(work, 'first');
  second = makeCertificate(work, 'second');
  serve(first);
  plainPort = await freePort();
  mirror = await startMirrorProcess({
    port: await freePort(),
    upstreams: [{ registry: 'docker.io', url: registry.url }],
    extra: {
      tls: { cert: served.cert, key: served.key, plainListen: `127.0.0.1:${plainPort}` },
      limits: { maxConnectionsPerClient: PER_CLIENT, handshakeTimeout: '1s' },
    },
  });
});

after(async () => {
  await mirror?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

test('skopeo pulls over HTTPS, verifying the certificate against the CA; plain HTTP stays available on plainListen', async () => {
  assert.match(mirror.url, /^https:/);
  const certDir = join(work, 'certs.d');
  mkdirSync(certDir);
  copyFileSync(first.caFile, join(certDir, 'ca.crt'));
  const host = mirror.url.replace('https://', '');
  const dest = join(work, 'alpine');
  const pulled = await skopeo(['copy', '--src-cert-dir', certDir, `docker://${host}/library/alpine:3.19`, `dir:${dest}`]);
  assert.equal(pulled.code, 0, pulled.stderr);
  assert.equal(readDirCopy(dest).manifestDigest, seed.alpine.manifestDigest);

  // Without the CA, verification fails: the certificate really is checked.
  const untrusted = await skopeo(['copy', `docker://${host}/library/alpine:3.19`, `dir:${join(work, 'untrusted')}`]);
  assert.notEqual(untrusted.code, 0);
  assert.match(untrusted.stderr, /certificate|x509/i);

  const plain = await get(`http://127.0.0.1:${plainPort}/v2/library/alpine/manifests/3.19`, { accept: seed.alpine.manifestMediaType });
  assert.equal(plain.status, 200);
  assert.equal(plain.headers['docker-content-digest'], seed.alpine.manifestDigest);
});

test('SIGHUP reloads the certificate: new connections get the new one, an open keep-alive connection keeps working', async () => {
  const port = Number(new URL(mirror.url).port);
  assert.equal(await presented(port), first.fingerprint);
  // One keep-alive connection, opened before the reload.
  const pinned = new Agent({ connections: 1, pipelining: 1, keepAliveTimeout: 60_000, connect: { rejectUnauthorized: false } });
  const ping = async (): Promise<number> => {
    const res = await request(`${mirror.url}/v2/`, { dispatcher: pinned });
    await res.body.dump();
    return res.statusCode;
  };
  assert.equal(await ping(), 200);
  let connects = 0;
  pinned.on('connect', () => connects++);

  serve(second);
  process.kill(mirror.pid, 'SIGHUP');
  await waitFor('certificate reloaded', () => mirror.logs().includes('TLS certificate reloaded'));
  assert.equal(await presented(port), second.fingerprint, 'new connections see the new certificate');
  for (let i = 0; i < 5; i++) assert.equal(await ping(), 200);
  assert.equal(connects, 0, 'the connection opened before the reload carried every request');
  await pinned.close();

  // A broken certificate file is refused and the current one stays.
  copyFileSync(first.keyFile, served.cert);
  process.kill(mirror.pid, 'SIGHUP');
  await waitFor('broken certificate refused', () => mirror.logs().includes('TLS certificate not reloaded'));
  assert.equal(await presented(port), second.fingerprint);
});

test('connections still in their TLS handshake count against the limits, and one that never handshakes is closed after handshakeTimeout', async () => {
  const port = Number(new URL(mirror.url).port);
  const silent: Socket[] = [];
  const closed: Promise<void>[] = [];
  for (let i = 0; i < PER_CLIENT; i++) {
    const socket = connectTcp({ port, host: '127.0.0.1', localAddress: '127.0.3.1' });
    socket.on('error', () => undefined);
    closed.push(new Promise((resolve) => socket.once('close', () => resolve())));
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    silent.push(socket);
  }
  try {
    // A real client from the same address completes its handshake: it is one too many.
    const answer = await new Promise<string>((resolve, reject) => {
      const tcp = connectTcp({ port, host: '127.0.0.1', localAddress: '127.0.3.1' });
      const socket: TLSSocket = connect({ socket: tcp, rejectUnauthorized: false }, () => {
        socket.write('GET /v2/ HTTP/1.1\r\nHost: mirror\r\nConnection: close\r\n\r\n');
      });
      let text = '';
      socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
      socket.once('close', () => resolve(text));
      socket.once('error', reject);
    });
    assert.match(answer, /^HTTP\/1\.1 429 /);
    assert.match(answer, /from one client address/);
    // The silent ones are cut by the handshake timeout, not kept for the default two minutes.
    await Promise.all(closed);
    const later = await get(`http://127.0.0.1:${plainPort}/v2/`);
    assert.equal(later.status, 200);
  } finally {
    for (const socket of silent) socket.destroy();
  }
});
