// A bounded fuzz of the HTTP surface: at least 20,000 generated requests (hostile
// paths, methods, headers, ns values, names and digests, raw malformed requests, plus
// valid pulls of seeded images) against a Stevedore child process in front of
// docker-registry and the Docker Hub double. The seed is printed: FUZZ_SEED=<n>
// replays a run, FUZZ_ONLY=i,j replays single requests, FUZZ_COUNT=<n> changes the count.
//
// What is allowed, and why:
// - the process never exits (its exit code stays unobserved) and /v2/ answers at the end;
// - no 5xx from input: 508 only for a Stevedore-Via that names this mirror (a loop is
//   input by design); 502/503/504 only when the upstream really answered 5xx on the
//   exact upstream path of that request (docker-registry 2.8 itself answers 500 to some
//   valid-shaped requests, such as a manifest GET by a layer's digest). The upstream is
//   healthy, so a circuit opened by input, or a mirror-made 502, is a violation;
// - every 4xx with a body is the spec's error JSON (the brief asks it of /v2; the README
//   promises it of the whole server); content served is byte for byte the seeded content;
// - no canary file next to or around the cache directory is opened (inotify) or served
//   (content), no unconfigured host is contacted (canary TCP server), and the upstream
//   sees only configured, valid repository names and references.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { Pool, request } from 'undici';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { seedStandard } from '../support/seed-standard.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { ALL_ACCEPT, generateRequest, type FuzzRequest, type FuzzWorld, type KnownImage } from '../support/fuzz-requests.js';
import { sendPooled, sendRaw, type FuzzOutcome } from '../support/fuzz-client.js';
import { checkResponse, describeRequest, header, settleGatewayErrors, violationReport, type GatewayError, type Violation } from '../support/fuzz-checks.js';
import { requirement } from '../support/requirements.js';
import { inotifyAvailable, plantCanaries, startCanaryServer, watchCanaries, type CanaryFiles, type CanaryServer, type CanaryWatch } from '../support/fuzz-canaries.js';

const SEED = process.env['FUZZ_SEED'] ? Number(process.env['FUZZ_SEED']) : randomInt(2 ** 31);
const COUNT = Number(process.env['FUZZ_COUNT'] ?? 20_000);
const ONLY = process.env['FUZZ_ONLY']?.split(',').map(Number);
const CONCURRENCY = 24;
const REQUEST_TIMEOUT_MS = 15_000;
const INSTANCE_ID = 'fuzz-mirror';

let registry: RegistryHandle;
let hub: HubDouble;
let mirror: MirrorProcess;
let canaries: CanaryFiles;
let canary: CanaryServer;
let watch: CanaryWatch | undefined;
const inotify = requirement('inotifywait', inotifyAvailable() ? undefined : 'not installed (Debian package inotify-tools)');
let world: FuzzWorld;
/** Known content by digest, to check what is served byte for byte. */
const content = new Map<string, Buffer>();

const violations: Violation[] = [];
/** 502/503/504 answers, to be matched with an upstream 5xx for the same request. */
const gatewayErrors: GatewayError[] = [];
const histogram = new Map<string, number>();
const byCategory = new Map<string, Map<string, number>>();
let executed = 0;
/** Set once the mirror's exit is observed: it must stay unset. */
let exitCode: number | null | undefined;

before(async () => {
  console.log(`fuzz seed ${SEED} (replay with FUZZ_SEED=${SEED})`);
  registry = await startRegistry();
  const seed = await seedStandard(registry.url);
  hub = await startHubDouble({ upstream: registry.url, rateLimit: 1_000_000_000 });
  canary = await startCanaryServer();
  canaries = plantCanaries();
  mirror = await startMirrorProcess({
    port: await freePort(),
    dir: canaries.cacheDir,
    instanceId: INSTANCE_ID,
    upstreams: [
      // Both registries go through the double, so every upstream request is seen and checked.
      { registry: 'docker.io', url: hub.url, settings: { aliases: ['index.docker.io'] } },
      { registry: 'registry.example.com', url: hub.url },
    ],
  });
  void mirror.exited.then((code) => (exitCode = code));
  const images: KnownImage[] = [];
  const blobsOf = (i: typeof seed.alpine) => [{ digest: i.configDigest, size: i.configBytes.length }, ...i.layers];
  const children = Object.values(seed.busybox.children);
  images.push({ repo: seed.alpine.repo, tag: seed.alpine.tag, manifestDigest: seed.alpine.manifestDigest, blobs: blobsOf(seed.alpine) });
  images.push({ repo: seed.app.repo, tag: seed.app.tag, manifestDigest: seed.app.manifestDigest, blobs: blobsOf(seed.app) });
  images.push({ repo: seed.busybox.repo, tag: seed.busybox.tag, manifestDigest: seed.busybox.indexDigest, blobs: children.flatMap(blobsOf) });
  for (const child of children) images.push({ repo: child.repo, manifestDigest: child.manifestDigest, blobs: blobsOf(child) });
  content.set(seed.busybox.indexDigest, seed.busybox.indexBytes);
  for (const image of [seed.alpine, seed.app, ...children]) {
    content.set(image.manifestDigest, image.manifestBytes);
    content.set(image.configDigest, image.configBytes);
    for (const layer of image.layers) {
      const res = await request(`${registry.url}/v2/${image.repo}/blobs/${layer.digest}`);
      content.set(layer.digest, Buffer.from(await res.body.arrayBuffer()));
    }
  }
  world = {
    canaryHost: canary.host,
    instanceId: INSTANCE_ID,
    canaryRelative: canaries.relative,
    canaryAbsolute: canaries.files,
    fakeBlobDigest: canaries.fakeBlobDigest,
    images,
  };
  if (inotifyAvailable()) watch = await watchCanaries(canaries);
  else console.log('inotifywait not found (apt-get install inotify-tools): canary files are checked by content only');
  hub.resetStats();
});

after(async () => {
  await watch?.stop();
  await mirror?.stop();
  await hub?.stop();
  await registry?.stop();
  await canary?.stop();
  canaries?.remove();
});

const count = (map: Map<string, number>, key: string): void => void map.set(key, (map.get(key) ?? 0) + 1);

/** Running until its exit is observed (the exit code), or the PID is gone. */
function alive(): boolean {
  if (exitCode !== undefined) return false;
  try {
    process.kill(mirror.pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The end of the mirror's log without the per-request lines: where a crash's stack trace is. */
const logTail = (): string => mirror.logs().split('\n').filter((l) => !l.includes('"msg":"request"')).slice(-25).join('\n');

function record(req: FuzzRequest, outcome: FuzzOutcome): void {
  executed++;
  const cat = byCategory.get(req.category) ?? new Map<string, number>();
  byCategory.set(req.category, cat);
  if (outcome.notSent) {
    count(histogram, 'not sent');
    violations.push({ req, reason: `the generator made a request undici will not send: ${outcome.error}` });
    return;
  }
  outcome.responses.forEach((res, i) => {
    count(histogram, String(res.status));
    count(cat, String(res.status));
    // On a keep-alive chain, each answer is judged against the request it answers.
    const answered = req.chain?.[i] ? { ...req, method: req.chain[i]!.method, path: req.chain[i]!.path } : req;
    for (const reason of checkResponse(answered, res, { tokens: canaries.tokens, content, gatewayErrors })) {
      violations.push({ req, reason, status: res.status, reqId: header(res, 'x-request-id') });
    }
  });
  if (req.chain && !outcome.error && outcome.responses.length !== req.chain.length) {
    violations.push({ req, reason: `a keep-alive chain of ${req.chain.length} requests got ${outcome.responses.length} answers (${req.chain.map((l) => `${l.method} ${l.path}`).join(' | ')})` });
  }
  if (outcome.error) {
    count(histogram, 'transport error');
    count(cat, 'transport error');
    // Raw requests that need no answer never report one; anything else that got none, or half of one, is a violation.
    violations.push({ req, reason: `no (complete) response: ${outcome.error}` });
  }
}

test(`${ONLY?.length ?? COUNT} fuzzed requests: no 5xx from input, OCI error JSON on /v2, intact content`, async () => {
  const port = Number(new URL(mirror.url).port);
  const pool = new Pool(mirror.url, { connections: CONCURRENCY, pipelining: 1, keepAliveTimeout: 10_000 });
  const indexes = ONLY ?? Array.from({ length: COUNT }, (_, i) => i);
  let next = 0;
  const started = Date.now();
  const inFlight = new Set<FuzzRequest>();
  /** The last completed requests: a crash on response finish outlives its request. */
  const recent: FuzzRequest[] = [];
  let crash: string | undefined;
  const worker = async (): Promise<void> => {
    // Bounded by the count; each request by its own timeout.
    while (next < indexes.length && !crash) {
      const req = generateRequest(SEED, indexes[next++]!, world);
      inFlight.add(req);
      const outcome = req.raw ? await sendRaw(port, req, REQUEST_TIMEOUT_MS) : await sendPooled(pool, req, REQUEST_TIMEOUT_MS);
      // A dead mirror's exit takes a moment to be observed: wait for it (briefly) before calling an error just an error.
      if (outcome.error && !crash && alive()) await Promise.race([mirror.exited, new Promise((r) => setTimeout(r, 250).unref())]);
      if (outcome.error && !crash && !alive()) {
        // Whatever was in flight when it died is the suspect list; the rest of the run would only pile up refusals.
        crash = [
          '  in flight:', ...[...inFlight].map((r) => `    ${describeRequest(r)}`),
          '  completed last (newest first):', ...recent.slice(-20).reverse().map((r) => `    ${describeRequest(r)}`),
        ].join('\n');
      }
      inFlight.delete(req);
      recent.push(req);
      if (recent.length > 100) recent.splice(0, 50);
      if (!crash) record(req, outcome);
    }
  };
  try {
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  } finally {
    await pool.close();
  }
  const fuzzMs = Date.now() - started;
  const upstreamFailures = new Set(hub.stats().requests.filter((r) => r.status >= 500).map((r) => r.path));
  const settled = settleGatewayErrors(gatewayErrors, upstreamFailures, mirror.logs());
  violations.push(...settled.violations);
  const sorted = [...histogram.entries()].sort((a, b) => b[1] - a[1]);
  console.log(`fuzz seed ${SEED}: ${executed} requests in ${(fuzzMs / 1000).toFixed(1)} s (${Math.round(executed / (fuzzMs / 1000))}/s), statuses ${sorted.map(([k, v]) => `${k}×${v}`).join(' ')}`);
  console.log(`  gateway errors passed on from an upstream 5xx: ${settled.passedOn}`);
  for (const [category, statuses] of byCategory) console.log(`  ${category}: ${[...statuses.entries()].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}×${v}`).join(' ')}`);
  if (crash) assert.fail(`seed ${SEED}: Stevedore died after ${executed} requests (replay suspects with FUZZ_SEED=${SEED} FUZZ_ONLY=<index>).\n${crash}\nIts last log lines:\n${logTail()}`);
  assert.equal(executed, indexes.length, `seed ${SEED}: only ${executed} of ${indexes.length} requests were recorded`);
  assert.equal(violations.length, 0, `seed ${SEED}: ${violations.length} violations (replay one with FUZZ_SEED=${SEED} FUZZ_ONLY=<index>):\n${violationReport(violations, mirror.logs())}`);
});

test('the process survived: still running, /v2/ and /healthz answer', async () => {
  assert.ok(alive(), `the Stevedore process is gone (exit code ${exitCode}); its last log lines:\n${logTail()}`);
  const ping = await request(`${mirror.url}/v2/`);
  await ping.body.dump();
  assert.equal(ping.statusCode, 200);
  const health = await request(`${mirror.url}/healthz`);
  assert.equal(health.statusCode, 200);
  assert.equal((await health.body.json() as { status: string }).status, 'ok');
  const pull = await request(`${mirror.url}/v2/${world.images[0]!.repo}/manifests/${world.images[0]!.manifestDigest}`, { headers: { accept: ALL_ACCEPT } });
  await pull.body.dump();
  assert.equal(pull.statusCode, 200, 'a valid pull still works');
  const errors = mirror.logs().split('\n').filter((l) => l.startsWith('{"level":50'));
  console.log(`mirror log: ${errors.length} error-level lines${errors.length ? `, e.g. ${errors[0]!.slice(0, 300)}` : ''}`);
  const crashes = mirror.logs().split('\n').filter((l) => /uncaught|unhandled|"level":60/i.test(l));
  assert.deepEqual(crashes.slice(0, 5), [], 'no fatal or uncaught errors in the log');
});

inotify.test('no file outside the cache directory was opened or served', async () => {
  // Content: checked on every response above. Access: inotify on every canary.
  const events = watch!.events();
  assert.deepEqual(events.slice(0, 20), [], `${events.length} inotify events on canaries outside the cache directory`);
  assert.ok(await watch!.proveWorking(), 'the inotify watch saw the control read: it works');
});

test('no unconfigured upstream was contacted; the upstream saw only configured, valid names', () => {
  assert.equal(canary.connections(), 0, `the canary server at ${canary.host} was contacted`);
  const stats = hub.stats();
  const component = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
  const digest = '(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})';
  const valid = new RegExp(`^/v2/${component}(?:/${component})*/(?:manifests/(?:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}|${digest})|blobs/${digest}|tags/list|referrers/${digest})$`);
  const repoOf = (path: string): string => path.replace(/^\/v2\//, '').replace(/\/(?:manifests|blobs|tags|referrers)\/[^/]+$/, '');
  const odd = stats.requests.filter((r) => r.path !== '/token' && r.path !== '/v2/' && !(valid.test(r.path) && repoOf(r.path).length <= 255));
  console.log(`upstream (hub double) saw ${stats.requests.length} requests: manifest GET ${stats.manifestGet}, HEAD ${stats.manifestHead}; blob GET ${stats.blobGet}, HEAD ${stats.blobHead}; tokens ${stats.tokens}; other ${stats.other}`);
  const opened = mirror.logs().split('\n').filter((l) => l.includes('endpoint circuit opened'));
  assert.deepEqual(opened.slice(0, 3), [], 'with a healthy upstream, no request may open an endpoint\'s circuit (every uncached pull would then fail)');
  assert.deepEqual(odd.slice(0, 10).map((r) => `${r.method} ${r.path.length > 120 ? `${r.path.slice(0, 120)}… (repository of ${repoOf(r.path).length} chars)` : r.path}`), [], `${odd.length} upstream requests for names or references no valid pull can produce`);
});
