import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseChallenges } from '../../src/upstream/challenge.js';

test('parses Docker Hub bearer challenges', () => {
  const [c] = parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"');
  assert.deepEqual(c, {
    scheme: 'bearer',
    params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/nginx:pull' },
  });
});

test('parses several challenges, quoted commas, escapes and bare tokens', () => {
  const all = parseChallenges('Basic realm="a, \\"b\\"", Bearer realm=https://x/token, service=svc,error="invalid_token"');
  assert.equal(all.length, 2);
  assert.deepEqual(all[0], { scheme: 'basic', params: { realm: 'a, "b"' } });
  assert.deepEqual(all[1]?.params, { realm: 'https://x/token', service: 'svc', error: 'invalid_token' });
});

test('malformed headers never throw, and yield no more than they say', () => {
  const cases: [string | undefined, unknown][] = [
    [undefined, []],
    ['', []],
    ['=', []],
    [',,,', []],
    ['"', []],
    ['Bearer', [{ scheme: 'bearer', params: {} }]],
    // An unterminated quote ends at the end of the header; nothing beyond it is invented.
    ['Bearer realm="unterminated', [{ scheme: 'bearer', params: { realm: 'unterminated' } }]],
    // Parameters without names are dropped; the repeats are one challenge, not a thousand.
    ['Bearer ='.repeat(1000), [{ scheme: 'bearer', params: {} }]],
  ];
  for (const [header, expected] of cases) assert.deepEqual(parseChallenges(header), expected, JSON.stringify(header?.slice(0, 40)));
});
