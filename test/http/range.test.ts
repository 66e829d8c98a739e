import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requestedRange } from '../../src/http/range.js';
import { isRegistryError } from '../../src/oci/errors.js';

test('Range: closed, open, suffix and trimmed ranges (RFC 9110)', () => {
  assert.equal(requestedRange(undefined, 1000), undefined);
  assert.deepEqual(requestedRange('bytes=0-99', 1000), { start: 0, end: 99 });
  assert.deepEqual(requestedRange('bytes=500-', 1000), { start: 500, end: 999 });
  assert.deepEqual(requestedRange('bytes=-500', 1000), { start: 500, end: 999 });
  assert.deepEqual(requestedRange('bytes=900-5000', 1000), { start: 900, end: 999 });
  assert.deepEqual(requestedRange('bytes=-5000', 1000), { start: 0, end: 999 });
});

test('Range: malformed and multi-range headers are ignored; unsatisfiable is 416', () => {
  assert.equal(requestedRange('bytes=abc', 1000), undefined);
  assert.equal(requestedRange('items=0-1', 1000), undefined);
  assert.equal(requestedRange('bytes=0-1,5-9', 1000), undefined);
  for (const header of ['bytes=1000-', 'bytes=5000-6000']) {
    try {
      requestedRange(header, 1000);
      assert.fail(`expected 416 for ${header}`);
    } catch (err) {
      assert.ok(isRegistryError(err));
      assert.equal(err.status, 416);
      assert.equal(err.headers['content-range'], 'bytes */1000');
    }
  }
});
