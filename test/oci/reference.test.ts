import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseDigest, digestOf } from '../../src/oci/digest.js';
import { isRegistryError } from '../../src/oci/errors.js';
import { isValidTag, looksLikeRegistryHost, validateRepository } from '../../src/oci/reference.js';
import { isAccepted, parseAccept } from '../../src/oci/media-types.js';

const code = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    assert.ok(isRegistryError(err), `expected a RegistryError, got ${String(err)}`);
    return `${err.status} ${err.code}`;
  }
  return 'ok';
};

test('repository names follow the distribution grammar', () => {
  for (const good of ['library/nginx', 'a', 'my-org/my_app', 'a.b/c__d', 'x/y/z/w', 'a--b']) {
    assert.equal(code(() => validateRepository(good)), 'ok', good);
  }
  for (const bad of ['', 'UPPER/case', '../etc', 'a/../b', 'a//b', '/a', 'a/', '.a', 'a_', 'a/.', '%2e%2e', 'a b', 'a\u0000b', 'x'.repeat(256)]) {
    assert.equal(code(() => validateRepository(bad)), '400 NAME_INVALID', JSON.stringify(bad));
  }
});

test('tags follow the distribution grammar', () => {
  assert.ok(isValidTag('latest'));
  assert.ok(isValidTag('v1.2.3-rc_1'));
  assert.ok(isValidTag('_x'));
  assert.ok(!isValidTag('.hidden'));
  assert.ok(!isValidTag('-dash'));
  assert.ok(!isValidTag('a'.repeat(129)));
  assert.ok(!isValidTag('a/b'));
});

test('digests: only verifiable algorithms with well-formed hex', () => {
  const hex = 'a'.repeat(64);
  assert.deepEqual(parseDigest(`sha256:${hex}`), { algorithm: 'sha256', hex, value: `sha256:${hex}` });
  assert.equal(parseDigest(`sha512:${'b'.repeat(128)}`).algorithm, 'sha512');
  for (const bad of ['sha256:abc', `sha256:${'A'.repeat(64)}`, `md5:${'a'.repeat(32)}`, `sha256:${'g'.repeat(64)}`, 'sha256', ':abc', `sha256:${hex}/../x`, `sha384:${'a'.repeat(96)}`]) {
    assert.equal(code(() => parseDigest(bad)), '400 DIGEST_INVALID', bad);
  }
  assert.equal(digestOf(Buffer.from('')), 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
});

test('registry host detection matches docker normalization', () => {
  assert.ok(looksLikeRegistryHost('ghcr.io'));
  assert.ok(looksLikeRegistryHost('localhost'));
  assert.ok(looksLikeRegistryHost('registry:5000'));
  assert.ok(!looksLikeRegistryHost('library'));
  assert.ok(!looksLikeRegistryHost('..'));
  assert.ok(!looksLikeRegistryHost('a..b'));
  assert.ok(!looksLikeRegistryHost('.hidden'));
});

test('Accept negotiation never returns an unlisted manifest type', () => {
  const accept = parseAccept('application/vnd.docker.distribution.manifest.v2+json; q=0.9, application/vnd.oci.image.manifest.v1+json');
  assert.deepEqual(accept, ['application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.oci.image.manifest.v1+json']);
  assert.ok(isAccepted('application/vnd.oci.image.manifest.v1+json', accept));
  assert.ok(!isAccepted('application/vnd.oci.image.index.v1+json', accept));
  assert.ok(isAccepted('application/vnd.oci.image.index.v1+json', []));
  assert.ok(isAccepted('application/vnd.oci.image.index.v1+json', ['*/*']));
  assert.ok(isAccepted('application/vnd.oci.image.index.v1+json', ['application/json']));
});

test('Accept lists are reduced to manifest types, so clients cannot mint cache keys', async () => {
  const { manifestAccept } = await import('../../src/oci/media-types.js');
  assert.deepEqual(manifestAccept(['application/json', 'application/vnd.oci.image.manifest.v1+json', 'x/evil-1']), ['application/vnd.oci.image.manifest.v1+json']);
  const modern = ['application/vnd.docker.distribution.manifest.list.v2+json', 'application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.oci.image.index.v1+json', 'application/vnd.oci.image.manifest.v1+json'];
  assert.deepEqual(manifestAccept(['*/*']), modern, 'a wildcard means the modern formats');
  assert.deepEqual(manifestAccept(['application/json']), modern, 'no manifest type named: the modern formats, not schema 1');
  assert.deepEqual(manifestAccept([]), modern);
});
