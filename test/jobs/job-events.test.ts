// What the cache sweeper and warm-up runs tell their listeners (for notifications).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SweepReport } from '../../src/cache/eviction.js';
import { CacheSweeper } from '../../src/jobs/cache-sweeper.js';
import { WarmupRunner, type WarmupRequest, type WarmupSummary } from '../../src/jobs/warmup.js';
import { digestOf } from '../../src/oci/digest.js';
import { manifestOf, memoryMirror, quiet } from '../mirror/memory-mirror.js';

test('the sweeper tells each sweep that removed blobs; a dry run and a sweep that removed nothing are not told', async (t) => {
  const { mirror, target, upstream, cache } = await memoryMirror(t);
  const layer = Buffer.alloc(10_000, 1);
  upstream.blobs.set(digestOf(layer), layer);
  await mirror.prefetchBlob(target, digestOf(layer));
  await mirror.fills.drain(5_000);
  // No manifest refers to the layer, and GC takes it at once.
  const sweeper = new CacheSweeper(cache, { maxSize: 0, lowWater: 0.8, blobIdleTtlMs: 86_400_000, gcGraceMs: -60_000, minFree: { bytes: 0 } }, 2 ** 31 - 1, quiet);
  t.after(() => sweeper.stop());
  const told: SweepReport[] = [];
  sweeper.onSwept = (report) => told.push(report);
  assert.equal((await sweeper.run({ dryRun: true })).removed.length, 1);
  assert.equal(told.length, 0, 'a dry run removes nothing');
  const report = await sweeper.run();
  assert.deepEqual(report.removed, [{ digest: digestOf(layer), size: layer.length, reason: 'unreferenced' }]);
  assert.deepEqual(told, [report]);
  await sweeper.run();
  assert.equal(told.length, 1, 'nothing left to remove');
});

const request = (images: string[]): WarmupRequest => ({ name: 'base', images, platforms: 'all', pin: false, concurrency: 2, trigger: 'api' });

test('a finished warm-up is told once, with its totals and status: succeeded, failed with its first error, stopped', async (t) => {
  const { mirror, upstream, database } = await memoryMirror(t);
  const layer = Buffer.alloc(20_000, 2);
  upstream.blobs.set(digestOf(layer), layer);
  upstream.manifests.set('v1', manifestOf(layer, 'v1'));
  const runner = new WarmupRunner(mirror, database.jobs, 'test-instance', quiet);
  const told: WarmupSummary[] = [];
  runner.onFinished = (summary) => told.push(summary);

  await runner.start(request(['acme/app:v1'])).done;
  assert.equal(told.length, 1);
  const { ms, ...rest } = told[0]!;
  assert.equal(typeof ms, 'number');
  // The config blob is not served by the fake upstream: the layer is fetched, the config fails.
  assert.deepEqual({ ...rest, firstError: typeof rest.firstError }, { job: 'base', trigger: 'api', status: 'failed', images: 1, blobsFetched: 1, blobsSkipped: 0, bytes: layer.length, errors: 1, firstError: 'string' });
  assert.match(told[0]!.firstError!, /^acme\/app:v1 sha256:/);

  const config = Buffer.from('v1');
  upstream.blobs.set(digestOf(config), config);
  await runner.start(request(['acme/app:v1'])).done;
  assert.equal(told.length, 2);
  assert.equal(told[1]!.status, 'succeeded');
  assert.equal(told[1]!.blobsFetched, 1, 'the config, now served');
  assert.equal(told[1]!.blobsSkipped, 1, 'the layer, cached by the first run');
  assert.equal(told[1]!.errors, 0);
  assert.ok(!('firstError' in told[1]!));

  upstream.lowBudget = true;
  await runner.start(request(['acme/app:v1'])).done;
  assert.equal(told.length, 3);
  assert.deepEqual({ status: told[2]!.status, images: told[2]!.images, errors: told[2]!.errors }, { status: 'stopped', images: 0, errors: 0 });
});
