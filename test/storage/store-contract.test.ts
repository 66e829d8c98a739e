// One contract, both stores: the filesystem store on a temp directory and the
// S3 store on a real Ceph RADOS Gateway. Whatever the cache relies on is
// asserted here for each, byte for byte.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { parseDigest, type Digest } from '../../src/oci/digest.js';
import { blobKey, NotStoredError, ObjectTooLargeError, type BlobStore } from '../../src/storage/blob-store.js';
import { FsStore } from '../../src/storage/fs-store.js';
import { S3Store } from '../../src/storage/s3-store.js';
import { rgwUnavailableReason, startRgw, type Rgw } from '../support/rgw.js';
import { requirement } from '../support/requirements.js';
import { waitForAsync } from '../support/wait.js';

const MiB = 1024 * 1024;
const work = mkdtempSync(join(tmpdir(), 'stevedore-store-contract-'));
const rgwTools = requirement('Ceph RADOS Gateway', await rgwUnavailableReason());
let rgw: Rgw | undefined;

before(async () => {
  if (!rgwTools.missing) rgw = await startRgw();
});

after(async () => {
  await rgw?.stop();
  rmSync(work, { recursive: true, force: true });
});

const digestOf = (bytes: Buffer): Digest => parseDigest(`sha256:${createHash('sha256').update(bytes).digest('hex')}`);

async function drain(body: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

interface Subject {
  name: string;
  requirement: ReturnType<typeof requirement> | undefined;
  make(): Promise<BlobStore>;
  /** What a crash mid-write leaves that sweepIncomplete must clear, seen from outside the store. */
  leftovers(): Promise<number>;
}

let fsRoot = '';
let bucket = '';
const subjects: Subject[] = [
  {
    name: 'filesystem store',
    requirement: undefined,
    async make() {
      fsRoot = mkdtempSync(join(work, 'fs-'));
      const store = new FsStore(fsRoot);
      await store.init();
      return store;
    },
    async leftovers() {
      const { readdirSync } = await import('node:fs');
      return readdirSync(join(fsRoot, 'tmp')).length;
    },
  },
  {
    name: 'S3 store on Ceph RGW',
    requirement: rgwTools,
    async make() {
      bucket = `contract-${randomBytes(4).toString('hex')}`;
      await rgw!.createBucket(bucket);
      const store = new S3Store({
        bucket, endpoint: rgw!.endpoint, region: rgw!.region, forcePathStyle: true, accessKeyId: rgw!.accessKeyId, secretAccessKey: rgw!.secretAccessKey,
        prefix: 'contract/', partSizeBytes: 5 * MiB, redirectExpirySeconds: 60, publicEndpoint: '', requestTimeoutMs: 10_000, maxSockets: 16,
        journalDir: mkdtempSync(join(work, 'journal-')),
      });
      await store.check();
      return store;
    },
    async leftovers() {
      return (await rgw!.uploads(bucket)).length;
    },
  },
];

for (const subject of subjects) {
  const declare = (name: string, body: (store: BlobStore) => Promise<void>): void => {
    const run = async (): Promise<void> => {
      const store = await subject.make();
      try {
        await body(store);
      } finally {
        await store.close();
      }
    };
    if (subject.requirement) subject.requirement.test(`${subject.name}: ${name}`, run);
    else test(`${subject.name}: ${name}`, run);
  };

  describe(subject.name, () => {
    declare('put, stat, read and open (whole and ranges) give the bytes back; absent objects say so', async (store) => {
      const bytes = randomBytes(300_000);
      const digest = digestOf(bytes);
      assert.equal(await store.stat(digest), undefined);
      await assert.rejects(store.open(digest), NotStoredError);
      await assert.rejects(store.read(digest, MiB), NotStoredError);
      await store.put(digest, bytes);
      assert.deepEqual(await store.stat(digest), { size: bytes.length });
      assert.ok((await store.read(digest, MiB)).equals(bytes));
      await assert.rejects(store.read(digest, 1000), ObjectTooLargeError);
      const whole = await store.open(digest);
      assert.equal(whole.size, bytes.length);
      assert.ok((await drain(whole.body)).equals(bytes));
      for (const range of [{ start: 0, end: 0 }, { start: 1000, end: 1999 }, { start: bytes.length - 10, end: bytes.length - 1 }]) {
        const part = await store.open(digest, range);
        assert.equal(part.size, bytes.length, 'the whole size, for a range too');
        assert.ok((await drain(part.body)).equals(bytes.subarray(range.start, range.end + 1)), JSON.stringify(range));
      }
      await store.delete(digest);
      assert.equal(await store.stat(digest), undefined);
      await store.delete(digest); // deleting what is gone is fine
    });

    // Sizes around the S3 store's 5 MiB parts; with the size announced, parts stream as bytes arrive, without it they are gathered.
    const writes = [
      { bytes: 12 * MiB + 12345, announced: true },
      { bytes: 12 * MiB + 12345, announced: false },
      { bytes: 10 * MiB, announced: true },
      { bytes: 10 * MiB, announced: false },
      { bytes: 5 * MiB, announced: true },
      { bytes: 1000, announced: false },
      { bytes: 0, announced: true },
    ];
    declare('a write is invisible until commit, then whole, at every size, announced or not', async (store) => {
      for (const { bytes: size, announced } of writes) {
        const what = `${size} bytes, ${announced ? 'announced' : 'size unknown'}`;
        const bytes = randomBytes(size);
        const digest = digestOf(bytes);
        const write = await store.beginWrite(digest, announced ? size : undefined);
        // Uneven chunks, so parts begin and end inside them.
        for (let at = 0, step = 700_001; at < bytes.length; at += step) await write.write([bytes.subarray(at, Math.min(bytes.length, at + step))]);
        assert.equal(await store.stat(digest), undefined, `${what}: not visible before commit`);
        if (write.readBack && size > 105) assert.ok((await write.readBack(5, 100)).equals(bytes.subarray(5, 105)), 'read back before commit');
        await write.commit();
        assert.deepEqual(await store.stat(digest), { size }, what);
        assert.ok((await drain((await store.open(digest)).body)).equals(bytes), what);
        if (write.readBack && size > 10) assert.ok((await write.readBack(bytes.length - 10, 10)).equals(bytes.subarray(-10)), 'read back after commit too');
        await write.close();
      }
      assert.equal(await subject.leftovers(), 0, 'no upload left open');
    });

    declare('an abort leaves nothing: after the last byte, or in the middle of a part or of a single PUT', async (store) => {
      // 7 MiB is two S3 parts; 3 MiB is one streamed PUT, whose last byte waits for the commit.
      for (const [size, cut] of [[7 * MiB, 7 * MiB], [7 * MiB, 3 * MiB + 17], [3 * MiB, 3 * MiB], [3 * MiB, MiB]] as const) {
        const other = randomBytes(size);
        const otherDigest = digestOf(other);
        const aborted = await store.beginWrite(otherDigest, other.length);
        await aborted.write([other.subarray(0, cut)]);
        await aborted.abort();
        await aborted.abort(); // idempotent
        await aborted.close();
        assert.equal(await store.stat(otherDigest), undefined);
        assert.equal(await subject.leftovers(), 0, `nothing of the write aborted at ${cut} remains`);
      }
    });

    declare('list names the objects under their keys, in key order; what a crash left is swept', async (store) => {
      const objects = Array.from({ length: 6 }, (_, i) => randomBytes(1000 + i));
      for (const o of objects) await store.put(digestOf(o), o);
      const listed = [];
      for await (const entry of store.list()) listed.push(entry);
      // In key order: the reconcile merges the listing with the index, which pages in digest order.
      const expected = objects.map((o) => ({ key: blobKey(digestOf(o)), digest: digestOf(o).value, size: o.length })).sort((a, b) => (a.key < b.key ? -1 : 1));
      assert.deepEqual(
        listed.map((e) => [e.key, e.digest?.value]),
        expected.map((e) => [e.key, e.digest]),
      );
      // A size only where the listing has it for free (a bucket's); then it is right.
      for (const [i, entry] of listed.entries()) if (entry.size !== undefined) assert.equal(entry.size, expected[i]!.size);
      // A write that is never committed nor aborted: the process died.
      const orphan = randomBytes(6 * MiB);
      const crashed = await store.beginWrite(digestOf(orphan), orphan.length);
      await crashed.write([orphan]);
      await waitForAsync('the crash to leave something', async () => (await subject.leftovers()) >= 1);
      assert.ok((await store.sweepIncomplete()) >= 1);
      assert.equal(await subject.leftovers(), 0, 'swept');
      assert.equal(await store.stat(digestOf(orphan)), undefined);
    });
  });
}
