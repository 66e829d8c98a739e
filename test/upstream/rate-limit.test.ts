import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRateLimit, retryAfterFromWindow } from '../../src/upstream/rate-limit.js';
import { retryAfterSeconds } from '../../src/upstream/upstream-registry.js';

test('parses Docker Hub rate-limit headers', () => {
  const rate = parseRateLimit({ 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '76;w=21600', 'docker-ratelimit-source': '203.0.113.7' }, 1234);
  assert.deepEqual(rate, { limit: 100, remaining: 76, windowSeconds: 21600, source: '203.0.113.7', observedAt: 1234 });
  assert.equal(parseRateLimit({}), undefined);
  assert.equal(parseRateLimit({ 'ratelimit-limit': 'lots' }), undefined);
  assert.deepEqual(parseRateLimit({ 'ratelimit-remaining': '5' }, 1), { limit: undefined, remaining: 5, windowSeconds: undefined, source: undefined, observedAt: 1 });
});

test('Retry-After: seconds, HTTP dates, or computed from the window', () => {
  assert.equal(retryAfterSeconds('120'), 120);
  assert.equal(retryAfterSeconds(new Date(10_000 + 30_000).toUTCString(), 10_000), 30);
  assert.equal(retryAfterSeconds('soon'), undefined);
  assert.equal(retryAfterFromWindow({ limit: 100, remaining: 0, windowSeconds: 21600, source: undefined, observedAt: 0 }), 216);
  assert.equal(retryAfterFromWindow(undefined), undefined);
});
