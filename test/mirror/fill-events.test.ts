// What fills tell their listeners (for notifications): a real cache on a temp dir, an upstream faked in memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { digestOf } from '../../src/oci/digest.js';
import { waitFor } from '../support/wait.js';
import { ENDPOINT, manifestOf, memoryMirror as setup, OCI_MANIFEST } from './memory-mirror.js';

test('a blob fetched upstream and cached is told once, with its endpoint and size; a cached one is not', async (t) => {
  const { mirror, target, upstream, seen } = await setup(t);
  const bytes = Buffer.alloc(100_000, 7);
  const digest = digestOf(bytes);
  upstream.blobs.set(digest, bytes);
  assert.deepEqual(await mirror.prefetchBlob(target, digest), { fetched: true, size: bytes.length });
  await waitFor('the filled event', () => seen.length > 0);
  const [[name, e]] = seen as [[string, Record<string, unknown>]];
  assert.equal(name, 'filled');
  assert.deepEqual({ ...e, ms: typeof e.ms }, { kind: 'blob', digest, repo: 'acme/app', upstream: 'docker.io', endpoint: ENDPOINT, bytes: bytes.length, ms: 'number' });
  assert.equal((await mirror.prefetchBlob(target, digest)).fetched, false);
  assert.equal(seen.length, 1, 'a blob already cached fills nothing');
});

test('a blob whose bytes do not match its digest is told as a mismatch and a failed fill; a 404 is neither', async (t) => {
  const { mirror, target, upstream, seen } = await setup(t);
  const digest = digestOf(Buffer.from('what was asked for'));
  upstream.blobs.set(digest, Buffer.from('what the upstream sent instead'));
  await assert.rejects(mirror.prefetchBlob(target, digest));
  await waitFor('the failure events', () => seen.length >= 2);
  const subject = { kind: 'blob', digest, repo: 'acme/app', upstream: 'docker.io', endpoint: ENDPOINT };
  assert.deepEqual(seen.map(([name]) => name), ['fillFailed', 'digestMismatch']);
  assert.deepEqual({ ...seen[0]![1], bytes: undefined, reason: undefined }, { ...subject, bytes: undefined, reason: undefined });
  assert.match(String(seen[0]![1].reason), /mismatch/);
  assert.equal(seen[1]![1].digest, digest);
  assert.equal(seen[1]![1].endpoint, ENDPOINT);

  seen.length = 0;
  await assert.rejects(mirror.prefetchBlob(target, digestOf(Buffer.from('nowhere'))), /blob unknown/);
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(seen, [], 'the upstream not having it is no failed fill');
});

test('a manifest fetched by tag is told with its tag and media type; a revalidation whose HEAD is unchanged is not', async (t) => {
  const { mirror, target, upstream, seen } = await setup(t);
  const first = manifestOf(Buffer.from('layer 1'), 'one');
  upstream.manifests.set('latest', first);
  const answer = await mirror.manifest(target, 'latest', [OCI_MANIFEST], false);
  assert.equal(answer.cache, 'miss');
  assert.equal(seen.length, 1);
  assert.equal(seen[0]![0], 'filled');
  assert.deepEqual({ ...seen[0]![1], ms: typeof seen[0]![1].ms }, { kind: 'manifest', digest: digestOf(first), repo: 'acme/app', upstream: 'docker.io', endpoint: ENDPOINT, bytes: first.length, mediaType: OCI_MANIFEST, tag: 'latest', ms: 'number' });

  // tagTtl 0: this pull revalidates with a HEAD, which finds the same digest.
  assert.equal((await mirror.manifest(target, 'latest', [OCI_MANIFEST], false)).cache, 'hit');
  assert.equal(upstream.heads, 1);
  assert.equal(seen.length, 1, 'an unchanged tag fetched nothing');
  assert.equal((await mirror.manifest(target, digestOf(first), [OCI_MANIFEST], false)).cache, 'hit');
  assert.equal(seen.length, 1);

  // The tag moved: the revalidation GETs the new manifest.
  const second = manifestOf(Buffer.from('layer 2'), 'two');
  upstream.manifests.set('latest', second);
  assert.equal((await mirror.manifest(target, 'latest', [OCI_MANIFEST], false)).digest, digestOf(second));
  assert.equal(seen.length, 2);
  assert.equal(seen[1]![1].digest, digestOf(second));
  assert.equal(seen[1]![1].tag, 'latest');
});

test('a manifest fetched by digest has no tag; one that does not match the digest asked for is a mismatch', async (t) => {
  const { mirror, target, upstream, seen } = await setup(t);
  const good = manifestOf(Buffer.from('layer'), 'good');
  upstream.manifests.set(digestOf(good), good);
  await mirror.manifest(target, digestOf(good), [OCI_MANIFEST], false);
  assert.equal(seen[0]![0], 'filled');
  assert.equal(seen[0]![1].digest, digestOf(good));
  assert.ok(!('tag' in seen[0]![1]));

  seen.length = 0;
  const asked = digestOf(Buffer.from('the manifest asked for'));
  upstream.manifests.set(asked, manifestOf(Buffer.from('layer'), 'another'));
  await assert.rejects(mirror.manifest(target, asked, [OCI_MANIFEST], false));
  assert.deepEqual(seen.map(([name]) => name), ['fillFailed', 'digestMismatch']);
  assert.equal(seen[1]![1].digest, asked, 'the digest that was asked for');
  assert.equal(seen[1]![1].kind, 'manifest');
  assert.equal(seen[1]![1].endpoint, ENDPOINT);
});
