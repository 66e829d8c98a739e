import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readiness, type ReadinessOptions } from '../../src/jobs/readiness.js';

type Endpoint = { url: string; circuit: 'closed' | 'open' | 'half-open' };

function readiness(t: { after(fn: () => void): void }, overrides: Partial<ReadinessOptions> & { endpoints?: Endpoint[][]; blobs?: number } = {}): { r: Readiness; clock: { now: number }; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-ready-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const clock = { now: 1_000_000 };
  const endpoints = overrides.endpoints ?? [[{ url: 'http://a', circuit: 'closed' }]];
  const upstreams = (): { registry: string; endpoints: Endpoint[] }[] => endpoints.map((e, i) => ({ registry: `r${i}`, endpoints: e }));
  const r = new Readiness({
    queryIndex: () => undefined,
    probeDir: dir,
    cache: { blobs: overrides.blobs ?? 0, diskSpace: async () => ({ free: 100, total: 1000 }) },
    minFree: { fraction: 0.05 },
    mirror: { upstreams },
    now: () => clock.now,
    ...overrides,
  });
  return { r, clock, dir };
}

test('the directory probe is remembered for probeCacheMs: a break shows once it lapses', async (t) => {
  const { r, clock, dir } = readiness(t, { probeCacheMs: 5_000 });
  assert.deepEqual((await r.check()).failing, []);
  rmSync(dir, { recursive: true });
  writeFileSync(dir, 'a file, not a directory');
  t.after(() => rmSync(dir, { force: true }));
  assert.deepEqual((await r.check()).failing, [], 'within the window the last answer stands');
  clock.now += 5_000;
  const report = await r.check();
  assert.deepEqual(report.failing, ['cacheDir']);
  assert.equal(report.status, 'not ready');
});

test('a store check that hangs fails after probeTimeoutMs; concurrent checks share one probe', async (t) => {
  let calls = 0;
  const { r } = readiness(t, { probeTimeoutMs: 50, checkStore: () => (calls++, new Promise<void>(() => undefined)) });
  const [a, b] = await Promise.all([r.check(), r.check()]);
  assert.equal(calls, 1);
  for (const report of [a, b]) {
    assert.deepEqual(report.failing, ['store']);
    assert.match(String(report.checks.store?.detail), /no answer within 50 ms/);
  }
});

test('index and free-space failures are named', async (t) => {
  const { r } = readiness(t, {
    queryIndex: () => {
      throw new Error('SQLITE_IOERR');
    },
    cache: { blobs: 0, diskSpace: async () => ({ free: 10, total: 1000 }) },
  });
  const report = await r.check();
  assert.deepEqual(report.failing, ['index', 'freeSpace']);
  assert.match(String(report.checks.index?.detail), /SQLITE_IOERR/);
  assert.match(String(report.checks.freeSpace?.detail), /10 bytes free .* floor of 50 bytes/);
});

test('upstreams: ready while any endpoint is closed, or while the cache holds something', async (t) => {
  const some = readiness(t, { endpoints: [[{ url: 'http://a', circuit: 'open' }], [{ url: 'http://b', circuit: 'closed' }]] });
  const partly = (await some.r.check()).checks.upstreams;
  assert.equal(partly?.ok, true);
  assert.match(String(partly?.detail), /circuit open: r0 http:\/\/a/);
  const allDown: Endpoint[][] = [[{ url: 'http://a', circuit: 'open' }, { url: 'http://b', circuit: 'half-open' }]];
  assert.deepEqual((await readiness(t, { endpoints: allDown }).r.check()).failing, ['upstreams']);
  assert.deepEqual((await readiness(t, { endpoints: allDown, blobs: 3 }).r.check()).failing, []);
});
