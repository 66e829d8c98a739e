import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CircuitBreaker } from '../../src/upstream/circuit-breaker.js';

test('opens after N consecutive failures, then allows one half-open trial', () => {
  const b = new CircuitBreaker({ failureThreshold: 3, openMinMs: 30_000, openMaxMs: 600_000 });
  b.failure(0);
  b.failure(0);
  assert.equal(b.state, 'closed');
  assert.ok(b.tryAcquire(0));
  b.failure(0);
  assert.equal(b.state, 'open');
  assert.ok(!b.tryAcquire(29_999));
  assert.ok(b.tryAcquire(30_000), 'one trial after the backoff');
  assert.equal(b.state, 'half-open');
  assert.ok(!b.tryAcquire(30_001), 'only one trial at a time');
  b.success();
  assert.equal(b.state, 'closed');
  assert.equal(b.consecutiveFailures, 0);
});

test('a failed trial reopens with a doubled backoff, capped', () => {
  const b = new CircuitBreaker({ failureThreshold: 1, openMinMs: 30_000, openMaxMs: 100_000 });
  b.failure(0);
  let now = 0;
  const openFor: number[] = [];
  for (let i = 0; i < 4; i++) {
    now = b.openUntil;
    assert.ok(b.tryAcquire(now));
    b.failure(now);
    openFor.push(b.openUntil - now);
  }
  assert.deepEqual(openFor, [60_000, 100_000, 100_000, 100_000]);
  assert.ok(b.tryAcquire(b.openUntil));
  b.release();
  assert.ok(b.tryAcquire(b.openUntil), 'a released trial frees the slot');
});
