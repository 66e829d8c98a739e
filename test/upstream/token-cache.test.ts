import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenCache, ttlFor } from '../../src/upstream/token-cache.js';

test('one fetch per key, shared by concurrent callers, reused until expiry', async () => {
  const cache = new TokenCache();
  let fetches = 0;
  let issue: () => void = () => undefined;
  const answered = new Promise<void>((r) => (issue = r));
  const fetch = async () => {
    fetches += 1;
    // The token endpoint answers only once every caller has asked.
    await answered;
    return { token: `t${fetches}`, expiresInSeconds: 300 };
  };
  const key = TokenCache.key('https://auth/token', 'svc', 'repository:a:pull');
  const asked = Array.from({ length: 10 }, () => cache.get(key, fetch));
  issue();
  const tokens = await Promise.all(asked);
  assert.deepEqual(new Set(tokens), new Set(['t1']));
  assert.equal(await cache.get(key, fetch), 't1');
  assert.equal(fetches, 1);
  const other = TokenCache.key('https://auth/token', 'svc', 'repository:b:pull');
  assert.equal(await cache.get(other, fetch), 't2');
});

test('a rejected token is dropped, but not a newer one', async () => {
  const cache = new TokenCache();
  const key = 'k';
  let n = 0;
  const fetch = async () => ({ token: `t${++n}`, expiresInSeconds: 300 });
  assert.equal(await cache.get(key, fetch), 't1');
  cache.invalidate(key, 't0');
  assert.equal(cache.peek(key), 't1');
  cache.invalidate(key, 't1');
  assert.equal(cache.peek(key), undefined);
  assert.equal(await cache.get(key, fetch), 't2');
});

test('tokens expire before the registry says they do', async () => {
  assert.equal(ttlFor(300), 270_000);
  assert.equal(ttlFor(60), 54_000);
  assert.equal(ttlFor(0.5), 1000);
  const clock = { ms: 1_000_000, now(): number { return this.ms; } };
  const cache = new TokenCache(clock);
  let n = 0;
  const fetch = async () => ({ token: `t${++n}`, expiresInSeconds: 60 });
  assert.equal(await cache.get('k', fetch), 't1');
  clock.ms += 53_999;
  assert.equal(await cache.get('k', fetch), 't1', 'still fresh just before 90% of its lifetime');
  clock.ms += 2;
  assert.equal(await cache.get('k', fetch), 't2', 'fetched anew once 90% of it passed');
});
