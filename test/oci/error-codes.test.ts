// Only the distribution-spec's error codes: the source's list is the spec's
// table, every constructor's body uses it, and a mirror whose upstream is down
// tells the outage with the code of what was asked for (and a 503).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as errors from '../../src/oci/errors.js';
import { RegistryError, SPEC_ERROR_CODES } from '../../src/oci/errors.js';
import { freePort } from '../support/registry.js';
import { startMirror } from '../support/stevedore.js';
import { get, json } from '../support/http.js';
import { SPEC_TABLE } from '../support/spec-errors.js';

test("the source's codes are the spec's table", () => {
  assert.deepEqual([...SPEC_ERROR_CODES].sort(), [...SPEC_TABLE].sort());
});

test('every error constructor writes a code from the table, whatever the request asked for', () => {
  let checked = 0;
  for (const [name, make] of Object.entries(errors)) {
    if (typeof make !== 'function' || make === RegistryError || !/^[a-z]/.test(name) || name.startsWith('is') || name.startsWith('with')) continue;
    const error = (make as (...args: unknown[]) => unknown)('detail', 1);
    assert.ok(error instanceof RegistryError, name);
    for (const subject of SPEC_ERROR_CODES) assert.ok(SPEC_TABLE.includes(error.toJSON(subject).errors[0]!.code), `${name} for ${subject}`);
    checked++;
  }
  assert.ok(checked >= 20, `${checked} constructors checked`);
});

test('with the upstream down: 503, with the code of the manifest, blob, tag list or referrers asked for', async () => {
  const closed = await freePort();
  const m = await startMirror({ upstreams: [{ registry: 'docker.io', url: `http://127.0.0.1:${closed}` }] });
  try {
    const digest = `sha256:${'a'.repeat(64)}`;
    const cases: [string, string][] = [
      [`/v2/acme/app/manifests/v1`, 'MANIFEST_UNKNOWN'],
      [`/v2/acme/app/blobs/${digest}`, 'BLOB_UNKNOWN'],
      [`/v2/acme/app/tags/list`, 'NAME_UNKNOWN'],
      [`/v2/acme/app/referrers/${digest}`, 'MANIFEST_UNKNOWN'],
    ];
    for (const [path, code] of cases) {
      const res = await get(`${m.url}${path}`);
      assert.equal(res.status, 503, path);
      assert.equal(json(res).errors?.[0]?.code, code, path);
      assert.match(String(json(res).errors?.[0]?.message), /upstream registry unavailable/, path);
    }
    const badTag = await get(`${m.url}/v2/acme/app/manifests/.hidden`);
    assert.equal(badTag.status, 404, 'a tag the spec refuses names no manifest');
    assert.equal(json(badTag).errors?.[0]?.code, 'MANIFEST_UNKNOWN');
  } finally {
    await m.stop();
  }
});
