import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenCache, ttlFor } from '../../src/upstream/token-cache.js';

test('one fetch per key, shared by concurrent callers, reused until expiry', async () => {
  const cache = new TokenCache();
  let fetches = 0;
  const fetch = async () => {
    fetches += 1;
    await new Promise((r) => setTimeout(r, 20));
    return { token: `t${fetches}`, expiresInSeconds: 300 };
  };
  const key = TokenCache.key('https://auth/token', 'svc', 'repository:a:pull');
  const tokens = await Promise.all(Array.from({ length: 10 }, () => cache.get(key, fetch)));
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
  const cache = new TokenCache();
  let n = 0;
  const fetch = async () => ({ token: `t${++n}`, expiresInSeconds: 1 });
  assert.equal(await cache.get('k', fetch), 't1');
  await new Promise((r) => setTimeout(r, 1100));
  assert.equal(await cache.get('k', fetch), 't2');
});
