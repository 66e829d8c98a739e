// Readers behind a fill share its read-back: one read and one buffer per block.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { READ_BACK_BLOCK, ReadBackBlocks } from '../../src/cache/read-back-blocks.js';
import { parseDigest } from '../../src/oci/digest.js';
import { cacheModes, FsStore } from '../../src/storage/fs-store.js';

const MiB = 1024 * 1024;

test('readers at nearby positions share one read per block; bytes are exact, and a growing block is read directly', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-readback-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const store = new FsStore(dir, cacheModes(false));
  await store.init();
  const bytes = randomBytes(5 * MiB + 12345);
  const write = await store.beginWrite(parseDigest(`sha256:${createHash('sha256').update(bytes).digest('hex')}`));
  await write.write([bytes]);
  const reads: [number, number][] = [];
  const blocks = new ReadBackBlocks((position, length) => {
    reads.push([position, length]);
    return write.readBack!(position, length);
  });
  // 32 readers walking the same stretch a block at a time, interleaved.
  const BLOCK = READ_BACK_BLOCK;
  const stored = 4 * BLOCK + 100; // the fill's store has this much; block 4 is still growing
  for (let position = 0; position < 4 * BLOCK; position += BLOCK) {
    const got = await Promise.all(Array.from({ length: 32 }, () => blocks.at(position, BLOCK, stored)));
    for (const g of got) assert.ok(g.equals(bytes.subarray(position, position + BLOCK)), `bytes at ${position}`);
    assert.equal(new Set(got.map((g) => g.buffer)).size, 1, 'one buffer shared by every reader');
  }
  assert.deepEqual(reads, [[0, BLOCK], [BLOCK, BLOCK], [2 * BLOCK, BLOCK], [3 * BLOCK, BLOCK]], 'one read per block for 32 readers');
  const tail = await blocks.at(4 * BLOCK, BLOCK, stored);
  assert.ok(tail.equals(bytes.subarray(4 * BLOCK, stored)), 'a block still growing: only what is stored, read directly');
  assert.deepEqual(reads.at(-1), [4 * BLOCK, 100]);
  await write.abort();
  await write.close();
});
