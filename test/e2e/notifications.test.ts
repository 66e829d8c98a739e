// Notifications end to end: skopeo pulls an image through a Stevedore process
// (docker-registry behind the Docker Hub double upstream) twice, cold then
// warm, and a real webhook receiver process records what four endpoints get:
// the events themselves (checked against the pushed image and the mirror's
// own request log), the HMAC signature, per-endpoint filters and headers, and
// the envelope's format as distribution's receivers parse it.
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { MediaTypes, pushImage, type PushedImage } from '../support/seed.js';
import { startMirrorProcess, type MirrorProcess } from '../support/stevedore.js';
import { readDirCopy, skopeo } from '../support/skopeo.js';
import { get } from '../support/http.js';
import { onPath, requirement } from '../support/requirements.js';
import { waitFor, waitForAsync } from '../support/wait.js';
import { parseEnvelopeStrictly, signatureOf, startReceiver, type Receiver, type WireEvent } from '../support/webhook-receiver.js';

const skopeoTool = requirement('skopeo', (await onPath(['skopeo'])) ? undefined : 'skopeo is not on PATH (apt-get install skopeo)');

const REPO = 'library/notify-app';
const TAG = 'v1';
const INSTANCE = 'notify-e2e-1';
const SECRET = 'whsec-7f3a9c0e-notify-e2e-do-not-log';
const TOKEN = 'notify-e2e-bearer-51c2d9';
const PATHS = { signed: '/signed', plain: '/plain', filtered: '/filtered', v1: '/v1' } as const;
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

let registry: RegistryHandle;
let hub: HubDouble;
let image: PushedImage;
let rx: Receiver;
let mirror: MirrorProcess;
let host: string;
const work = mkdtempSync(join(tmpdir(), 'stevedore-notify-'));

interface EndpointStatus { name: string; pending: number; delivered: number; failedAttempts: number; dropped: number }
interface Status { recorded: number; endpoints: EndpointStatus[] }
interface LogLine { msg?: string; reqId?: string; method?: string; path?: string; status?: number; cache?: string; digest?: string }

/** One phase's expectation: the mirror's own request-log lines for the manifest and blob GETs skopeo made. */
interface Phase { pulls: WireEvent[]; fills: WireEvent[]; others: WireEvent[]; served: LogLine[]; startedAt: number; endedAt: number }

const endpoint = (name: string, path: string, more: Record<string, unknown> = {}): Record<string, unknown> => ({
  name,
  url: `${rx.url}${path}`,
  allow: ['127.0.0.1'],
  timeout: '2s',
  backoff: '200ms',
  maxBackoff: '1s',
  batch: { maxEvents: 100, maxWait: '100ms' },
  ...more,
});

before(async () => {
  if (skopeoTool.missing) return;
  registry = await startRegistry();
  image = await pushImage(registry.url, REPO, TAG, { format: 'docker', layers: [30_000, 45_000] });
  hub = await startHubDouble({ upstream: registry.url });
  rx = await startReceiver({ recordFile: join(work, 'records.jsonl') });
  mirror = await startMirrorProcess({
    port: await freePort(),
    instanceId: INSTANCE,
    upstreams: [{ registry: 'docker.io', url: hub.url }],
    extra: {
      notifications: {
        endpoints: [
          endpoint('signed', PATHS.signed, { secret: SECRET }),
          endpoint('plain', PATHS.plain),
          endpoint('filtered', PATHS.filtered, { ignore: { hits: true, actions: ['fill.*'] }, headers: { Authorization: `Bearer ${TOKEN}`, 'X-Team': ['infra', 'ci'] } }),
          endpoint('legacy', PATHS.v1, { format: 'v1' }),
        ],
      },
    },
  });
  host = mirror.url.replace('http://', '');
});

after(async () => {
  await mirror?.stop();
  await rx?.stop();
  await hub?.stop();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function status(): Promise<Status> {
  const res = await get(`${mirror.url}/api/notifications`);
  assert.equal(res.status, 200, `/api/notifications answered ${res.status}: ${res.body.toString()}`);
  return JSON.parse(res.body.toString('utf8')) as Status;
}

function logLines(): LogLine[] {
  return mirror
    .logs()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
}

const servedLines = (lines: LogLine[]): LogLine[] =>
  lines.filter((l) => l.msg === 'request' && l.status === 200 && l.path !== undefined && /^\/v2\/.+\/(manifests|blobs)\/[^/]+$/.test(l.path));

const uniqueIds = (events: WireEvent[]): Set<string> => new Set(events.map((e) => e.id));

/**
 * Waits until the plain endpoint (no filter: it gets every recorded event) holds
 * every event the mirror recorded and no endpoint has any pending.
 */
async function settled(): Promise<void> {
  await waitForAsync('every recorded event delivered to every endpoint', async () => {
    const s = await status();
    return s.endpoints.every((e) => e.pending === 0) && uniqueIds(rx.events({ path: PATHS.plain })).size === s.recorded;
  }, 20_000);
}

async function pullPhase(name: string): Promise<Phase> {
  const logsBefore = logLines().length;
  const eventsBefore = rx.events({ path: PATHS.plain }).length;
  const startedAt = Date.now();
  const dest = join(work, name);
  const result = await skopeo(['copy', '--src-tls-verify=false', `docker://${host}/${REPO}:${TAG}`, `dir:${dest}`]);
  assert.equal(result.code, 0, `skopeo copy failed: ${result.stderr}`);
  const copy = readDirCopy(dest);
  assert.equal(copy.manifestDigest, image.manifestDigest);
  assert.deepEqual([...copy.blobs].sort(), [image.configDigest, ...image.layers.map((l) => l.digest)].sort());
  // Request-log lines are written when each response closes: wait for one per blob and the manifest.
  await waitFor('the request log of the pull', () => servedLines(logLines().slice(logsBefore)).length >= 1 + copy.blobs.length);
  const served = servedLines(logLines().slice(logsBefore));
  await rx.waitForEvents('a pull event per request served', (evs) => evs.slice(eventsBefore).filter((e) => e.action === 'pull').length >= served.length, 20_000, { path: PATHS.plain });
  if (name === 'cold') {
    await rx.waitForEvents('a fill.completed per blob and the manifest', (evs) => evs.slice(eventsBefore).filter((e) => e.action === 'fill.completed').length >= copy.blobs.length + 1, 20_000, { path: PATHS.plain });
  }
  await settled();
  const events = rx.events({ path: PATHS.plain }).slice(eventsBefore);
  return {
    pulls: events.filter((e) => e.action === 'pull'),
    fills: events.filter((e) => e.action === 'fill.completed'),
    others: events.filter((e) => e.action !== 'pull' && e.action !== 'fill.completed'),
    served,
    startedAt,
    endedAt: Date.now(),
  };
}

let cold: Phase | undefined;
let warm: Phase | undefined;

/** What distribution's receivers read of each blob and manifest of the image. */
function pushed(): Map<string, { kind: 'manifests' | 'blobs'; size: number; mediaTypes: string[] }> {
  const m = new Map<string, { kind: 'manifests' | 'blobs'; size: number; mediaTypes: string[] }>();
  m.set(image.manifestDigest, { kind: 'manifests', size: image.manifestBytes.length, mediaTypes: [image.manifestMediaType] });
  // A blob's own media type is the manifest's business; distribution reports blobs as octet-stream.
  m.set(image.configDigest, { kind: 'blobs', size: image.configBytes.length, mediaTypes: [MediaTypes.dockerConfig, 'application/octet-stream'] });
  for (const l of image.layers) m.set(l.digest, { kind: 'blobs', size: l.size, mediaTypes: [MediaTypes.dockerLayer, 'application/octet-stream'] });
  return m;
}

function checkPulls(phase: Phase, allowedOutcomes: readonly string[]): void {
  const expected = pushed();
  const byReqId = new Map(phase.served.map((l) => [l.reqId, l]));
  assert.equal(phase.pulls.length, phase.served.length, `one pull event per manifest/blob GET served (${phase.served.map((l) => `${l.method} ${l.path}`).join(', ')})`);
  assert.equal(new Set(phase.pulls.map((e) => e.request?.id)).size, phase.pulls.length, 'one pull event per request');
  for (const e of phase.pulls) {
    const line = byReqId.get(e.request?.id);
    assert.ok(line, `pull event ${e.id} names request ${e.request?.id}, which the mirror's request log has: ${JSON.stringify(e)}`);
    const digest = e.target?.digest ?? '';
    const want = expected.get(digest);
    assert.ok(want, `pull of ${digest}, a digest of the pushed image`);
    assert.equal(e.target?.repository, REPO);
    assert.equal(e.target?.size, want.size, `size of ${digest}`);
    assert.equal(e.target?.length, want.size, `length of ${digest}`);
    assert.ok(want.mediaTypes.includes(e.target?.mediaType ?? ''), `media type of ${digest}: ${e.target?.mediaType} not in ${want.mediaTypes.join(', ')}`);
    assert.equal(e.target?.url, `${mirror.url}/v2/${REPO}/${want.kind}/${digest}`);
    if (want.kind === 'manifests') assert.equal(e.target?.tag, TAG, 'skopeo asked for the manifest by tag');
    else assert.equal(e.target?.tag, undefined, 'blob pulls have no tag');
    assert.equal(e.request?.method, 'GET');
    assert.equal(e.request?.method, line.method);
    assert.match(e.request?.useragent ?? '', /skopeo/i);
    assert.match(e.request?.addr ?? '', /^127\.0\.0\.1:\d+$/);
    assert.equal(e.request?.host, host);
    assert.deepEqual(e.actor, {}, 'no client auth: an empty actor');
    assert.equal(e.source?.instanceID, INSTANCE);
    assert.match(e.source?.addr ?? '', new RegExp(`:${mirror.url.split(':').pop()}$`));
    const outcome = String(e.stevedore?.outcome);
    assert.ok(allowedOutcomes.includes(outcome), `outcome ${outcome} of ${digest} in ${allowedOutcomes.join('|')}`);
    assert.equal(outcome, line.cache, "the outcome is the request log's cache field");
    assert.equal(e.stevedore?.upstream, 'docker.io');
    assert.equal(e.stevedore?.complete, true);
  }
  assert.deepEqual([...new Set(phase.pulls.map((e) => e.target?.digest))].sort(), [...expected.keys()].sort(), 'every manifest and blob of the image was pulled once');
}

function checkCommon(events: WireEvent[], phase: Phase): void {
  for (const e of events) {
    assert.match(e.id, UUID);
    assert.match(e.timestamp, RFC3339);
    const at = Date.parse(e.timestamp);
    assert.ok(at >= phase.startedAt - 1000 && at <= phase.endedAt + 1000, `timestamp ${e.timestamp} within the phase`);
  }
}

skopeoTool.test('a cold then a warm skopeo pull: exactly a miss pull and a fill.completed per manifest and blob, then hit pulls only', { timeout: 180_000 }, async (t) => {
  cold = await pullPhase('cold');
  checkPulls(cold, ['miss']);
  checkCommon([...cold.pulls, ...cold.fills], cold);
  // A fill is whatever came from upstream into the cache: each blob, and the manifest.
  const filled = [image.manifestDigest, image.configDigest, ...image.layers.map((l) => l.digest)];
  assert.deepEqual(cold.fills.map((e) => e.target?.digest).sort(), [...filled].sort(), 'one fill.completed per blob and for the manifest');
  const sizes = pushed();
  for (const e of cold.fills) {
    const digest = e.target?.digest ?? '';
    assert.equal(e.target?.repository, REPO);
    assert.equal(e.target?.size, sizes.get(digest)?.size);
    if (digest === image.manifestDigest) {
      assert.equal(e.target?.mediaType, image.manifestMediaType);
      assert.equal(e.target?.tag, TAG);
    }
    assert.equal(e.stevedore?.upstream, 'docker.io');
    assert.equal(e.stevedore?.endpoint, hub.url, 'the upstream endpoint the fill came from');
    assert.equal(e.stevedore?.bytes, sizes.get(digest)?.size);
    assert.equal(typeof e.stevedore?.durationMs, 'number');
    assert.ok((e.stevedore?.durationMs as number) >= 0);
    assert.equal(e.source?.instanceID, INSTANCE);
  }
  assert.deepEqual(cold.others.map((e) => e.action), [], 'no other events on a cold pull');

  warm = await pullPhase('warm');
  checkPulls(warm, ['hit']);
  checkCommon(warm.pulls, warm);
  assert.deepEqual([...warm.fills, ...warm.others].map((e) => e.action), [], 'a warm pull sends hit pulls only');

  const plain = rx.events({ path: PATHS.plain });
  assert.equal(uniqueIds(plain).size, plain.length, 'every event id is unique (a receiver that always answered 200 got no repeats)');
  const s = await status();
  assert.equal(s.recorded, plain.length, 'the plain endpoint got every recorded event');
  t.diagnostic(`cold: ${cold.pulls.length} pulls, ${cold.fills.length} fills; warm: ${warm.pulls.length} pulls; recorded ${s.recorded}; ${JSON.stringify(s.endpoints)}`);
});

skopeoTool.test('a signed endpoint: Stevedore-Signature-256 is the HMAC-SHA256 of the raw body; others are unsigned; the secret is in no log or body', async () => {
  assert.ok(cold && warm, 'the pulls ran');
  const signed = rx.requests({ path: PATHS.signed });
  assert.ok(signed.length > 0);
  for (const r of signed) {
    assert.equal(r.method, 'POST');
    assert.equal(r.headers['stevedore-signature-256'], signatureOf(SECRET, r.body), `signature of ${r.body.slice(0, 80)}`);
    assert.equal(r.headers['stevedore-event-count'], String((JSON.parse(r.body) as { events: unknown[] }).events.length));
  }
  assert.deepEqual(
    [...uniqueIds(rx.events({ path: PATHS.signed }))].sort(),
    [...uniqueIds(rx.events({ path: PATHS.plain }))].sort(),
    'the signed endpoint, unfiltered, got the same events',
  );
  const others = rx.requests().filter((r) => r.path !== PATHS.signed);
  assert.ok(others.length > 0);
  for (const r of others) assert.equal(r.headers['stevedore-signature-256'], undefined, `no signature on ${r.path}`);
  const logs = mirror.logs();
  assert.ok(logs.length > 0);
  assert.ok(!logs.includes(SECRET), 'the secret is not in the logs');
  assert.ok(!logs.includes(TOKEN), 'the endpoint token is not in the logs');
  for (const r of rx.requests()) {
    assert.ok(!r.body.includes(SECRET), `no secret in a body sent to ${r.path}`);
    assert.ok(!r.body.includes(TOKEN), `no token in a body sent to ${r.path}`);
  }
});

skopeoTool.test('a filtered endpoint (ignore hits and fill.*) gets the miss pulls only, with its configured headers', async () => {
  assert.ok(cold && warm, 'the pulls ran');
  const filtered = rx.events({ path: PATHS.filtered });
  assert.deepEqual(filtered.map((e) => e.id).sort(), cold.pulls.map((e) => e.id).sort(), 'exactly the cold (miss) pulls');
  assert.ok(filtered.every((e) => e.action === 'pull' && e.stevedore?.outcome === 'miss'));
  for (const r of rx.requests({ path: PATHS.filtered })) {
    assert.equal(r.headers.authorization, `Bearer ${TOKEN}`);
    assert.equal(r.headers['x-team'], 'infra, ci', 'a list of values arrives as that many header lines');
  }
  for (const r of rx.requests().filter((x) => x.path !== PATHS.filtered)) {
    assert.equal(r.headers.authorization, undefined, `headers of one endpoint stay with it (${r.path})`);
    assert.equal(r.headers['x-team'], undefined);
  }
});

skopeoTool.test("the envelope: v2 and v1 media types as configured, and every body parses with distribution's documented fields only", async () => {
  assert.ok(cold && warm, 'the pulls ran');
  const all = rx.requests();
  assert.ok(all.length >= 4);
  for (const r of all) {
    const want = r.path === PATHS.v1 ? 'application/vnd.docker.distribution.events.v1+json' : 'application/vnd.docker.distribution.events.v2+json';
    assert.equal(r.headers['content-type'], want, `content type on ${r.path}`);
    parseEnvelopeStrictly(r.body, r.path);
  }
  assert.deepEqual(
    [...uniqueIds(rx.events({ path: PATHS.v1 }))].sort(),
    [...uniqueIds(rx.events({ path: PATHS.plain }))].sort(),
    'the v1 endpoint got the same events, in the same envelope',
  );
});
