import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Outbox } from '../../src/notify/outbox.js';

function scratch(): { path: string; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-outbox-'));
  return { path: join(dir, 'notifications.db'), done: () => rmSync(dir, { recursive: true, force: true }) };
}

const chunk = (endpoint: string, from: number, count: number) => ({ endpoint, events: Array.from({ length: count }, (_, i) => `{"n":${from + i}}`), recordedAt: 1_000 + from });
const numbers = (taken: { events: string[] } | undefined) => (taken?.events ?? []).map((e) => (JSON.parse(e) as { n: number }).n);

test('events come out per endpoint in the order they went in, a batch of whole rows, and go only when acknowledged', () => {
  const { path, done } = scratch();
  const outbox = new Outbox(path, 0o600);
  try {
    assert.equal(statSync(path).mode & 0o777, 0o600);
    outbox.append([chunk('a', 0, 3), chunk('b', 0, 2), chunk('a', 3, 2)], 100);
    assert.deepEqual(numbers(outbox.take('a', 10)), [0, 1, 2, 3, 4]);
    assert.deepEqual(numbers(outbox.take('a', 4)), [0, 1, 2], 'the second row would not fit in 4');
    assert.deepEqual([outbox.pending('a'), outbox.pending('b')], [5, 2]);
    outbox.acknowledge('a', outbox.take('a', 4)!);
    assert.deepEqual(numbers(outbox.take('a', 10)), [3, 4]);
    assert.equal(outbox.take('a', 10)!.recordedAt, 1_003);
    assert.deepEqual([outbox.pending('a'), outbox.pending('b')], [2, 2], 'the other endpoint keeps its events');
  } finally {
    outbox.close();
    done();
  }
});

test('past maxPending the oldest events of that endpoint are dropped, down to the front of a row, and counted', () => {
  const { path, done } = scratch();
  const outbox = new Outbox(path);
  try {
    assert.deepEqual([...outbox.append([chunk('a', 0, 4)], 5)], []);
    const dropped = outbox.append([chunk('a', 4, 4), chunk('b', 0, 1)], 5);
    assert.deepEqual([...dropped], [['a', 3]]);
    assert.deepEqual(numbers(outbox.take('a', 10)), [3, 4, 5, 6, 7]);
    assert.deepEqual([outbox.pending('a'), outbox.recount('a'), outbox.pending('b')], [5, 5, 1]);
  } finally {
    outbox.close();
    done();
  }
});

test('events survive closing and reopening; those of endpoints no longer configured are deleted', () => {
  const { path, done } = scratch();
  try {
    const before = new Outbox(path);
    before.append([chunk('a', 0, 2), chunk('gone', 0, 3)], 100);
    before.close();
    const after = new Outbox(path);
    assert.deepEqual(numbers(after.take('a', 10)), [0, 1]);
    assert.equal(after.pending('gone'), 3);
    assert.equal(after.forgetOthers(['a']), 3);
    assert.deepEqual([after.pending('a'), after.pending('gone')], [2, 0]);
    after.close();
  } finally {
    done();
  }
});

test('a second process adding events is seen after a recount', () => {
  const { path, done } = scratch();
  const server = new Outbox(path);
  const cli = new Outbox(path);
  try {
    assert.equal(server.pending('a'), 0);
    cli.append([chunk('a', 0, 2)], 100);
    assert.equal(server.take('a', 10)!.events.length, 2, 'take reads the file, not the counts');
    assert.equal(server.recount('a'), 2);
  } finally {
    server.close();
    cli.close();
    done();
  }
});
