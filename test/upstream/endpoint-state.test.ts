// The events an endpoint's state reports for notifications: circuit open and close, a low pull budget.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/log.js';
import { EndpointState, STILL_DOWN_LOG_MS, type EndpointEvents } from '../../src/upstream/endpoint-state.js';

const quiet = createLogger('silent', new Writable({ write: (_chunk, _enc, cb) => cb() }));
const breaker = { failureThreshold: 2, openMinMs: 30_000, openMaxMs: 600_000 };

function recorded(credential = 'anonymous'): { state: EndpointState; seen: [string, unknown][] } {
  const seen: [string, unknown][] = [];
  const events: EndpointEvents = {
    circuitOpened: (e) => seen.push(['opened', e]),
    circuitClosed: (e) => seen.push(['closed', e]),
    budgetLow: (e) => seen.push(['budgetLow', e]),
  };
  const state = new EndpointState('https://registry-1.docker.io', credential, breaker, { warnBelow: 10, minRemaining: 2 }, quiet, undefined, events);
  return { state, seen };
}

test('the circuit opening is told once, not on every failed trial; closing tells how long it was down', () => {
  const { state, seen } = recorded();
  state.failure('ECONNREFUSED', 1_000);
  assert.deepEqual(seen, [], 'one failure under the threshold opens nothing');
  state.failure('ECONNREFUSED', 2_000);
  assert.deepEqual(seen, [['opened', { endpoint: 'https://registry-1.docker.io', failures: 2, reason: 'ECONNREFUSED' }]]);
  // Failed half-open trials, one of them past the 'still down' reminder: no second opening.
  assert.ok(state.breaker.tryAcquire(state.breaker.openUntil));
  state.failure('answered 503', 2_000 + STILL_DOWN_LOG_MS);
  assert.ok(state.breaker.tryAcquire(state.breaker.openUntil));
  state.failure('answered 503', 3_000 + STILL_DOWN_LOG_MS);
  assert.equal(seen.length, 1);
  state.success(2_000 + 5 * 60_000);
  assert.deepEqual(seen[1], ['closed', { endpoint: 'https://registry-1.docker.io', downMs: 5 * 60_000 }]);
  state.success(10 * 60_000);
  assert.equal(seen.length, 2, 'a success while up closes nothing');
  // Down again: a new opening.
  state.failure('reset', 11 * 60_000);
  state.failure('reset', 11 * 60_000);
  assert.deepEqual(seen[2], ['opened', { endpoint: 'https://registry-1.docker.io', failures: 2, reason: 'reset' }]);
});

test('the pull budget is told once when it falls under warnBelow, with whose budget it is but never the user name', () => {
  const rate = (remaining: number): Record<string, string> => ({ 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': `${remaining};w=21600` });
  const { state, seen } = recorded();
  state.observe('GET', '/v2/library/x/manifests/latest', 200, rate(11), 5);
  assert.deepEqual(seen, []);
  state.observe('GET', '/v2/library/x/manifests/latest', 200, rate(9), 5);
  state.observe('GET', '/v2/library/x/manifests/latest', 200, rate(8), 5);
  assert.deepEqual(seen, [['budgetLow', { endpoint: 'https://registry-1.docker.io', credential: 'anonymous', remaining: 9, limit: 100, windowSeconds: 21600 }]]);
  state.observe('GET', '/v2/library/x/manifests/latest', 200, rate(100), 5);
  state.observe('GET', '/v2/library/x/manifests/latest', 200, rate(3), 5);
  assert.equal(seen.length, 2, 'a new window that runs low again is told again');

  const configured = recorded('alice');
  configured.state.observe('GET', '/v2/library/x/manifests/latest', 200, rate(1), 5);
  assert.deepEqual(configured.seen, [['budgetLow', { endpoint: 'https://registry-1.docker.io', credential: 'configured', remaining: 1, limit: 100, windowSeconds: 21600 }]]);
  assert.ok(!JSON.stringify(configured.seen).includes('alice'));
});
