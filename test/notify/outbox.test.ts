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

const rows = (endpoint: string, from: number, count: number) => Array.from({ length: count }, (_, i) => ({ endpoint, body: `{"n":${from + i}}`, recordedAt: 1_000 + from + i }));

test('rows come out per endpoint in the order they went in, and go only when acknowledged', () => {
  const { path, done } = scratch();
  const outbox = new Outbox(path, 0o600);
  try {
    assert.equal(statSync(path).mode & 0o777, 0o600);
    outbox.append([...rows('a', 0, 3), ...rows('b', 0, 2), ...rows('a', 3, 2)], 100);
    assert.deepEqual(outbox.take('a', 10).map((r) => r.body), ['{"n":0}', '{"n":1}', '{"n":2}', '{"n":3}', '{"n":4}']);
    assert.deepEqual([outbox.pending('a'), outbox.pending('b')], [5, 2]);
    const first = outbox.take('a', 2);
    outbox.acknowledge('a', first[0]!.seq, first[1]!.seq);
    assert.deepEqual(outbox.take('a', 10).map((r) => r.body), ['{"n":2}', '{"n":3}', '{"n":4}']);
    assert.deepEqual([outbox.pending('a'), outbox.pending('b')], [3, 2], 'the other endpoint keeps its rows');
  } finally {
    outbox.close();
    done();
  }
});

test('past maxPending the oldest rows of that endpoint are dropped, and counted', () => {
  const { path, done } = scratch();
  const outbox = new Outbox(path);
  try {
    assert.deepEqual([...outbox.append(rows('a', 0, 4), 5)], []);
    const dropped = outbox.append([...rows('a', 4, 4), ...rows('b', 0, 1)], 5);
    assert.deepEqual([...dropped], [['a', 3]]);
    assert.deepEqual(outbox.take('a', 10).map((r) => r.body), ['{"n":3}', '{"n":4}', '{"n":5}', '{"n":6}', '{"n":7}']);
    assert.equal(outbox.pending('b'), 1);
  } finally {
    outbox.close();
    done();
  }
});

test('rows survive closing and reopening; rows of endpoints no longer configured are deleted', () => {
  const { path, done } = scratch();
  try {
    const before = new Outbox(path);
    before.append([...rows('a', 0, 2), ...rows('gone', 0, 3)], 100);
    before.close();
    const after = new Outbox(path);
    assert.deepEqual(after.take('a', 10).map((r) => r.body), ['{"n":0}', '{"n":1}']);
    assert.equal(after.pending('gone'), 3);
    assert.equal(after.forgetOthers(['a']), 3);
    assert.deepEqual([after.pending('a'), after.pending('gone')], [2, 0]);
    after.close();
  } finally {
    done();
  }
});

test('a second process adding rows is seen after a recount', () => {
  const { path, done } = scratch();
  const server = new Outbox(path);
  const cli = new Outbox(path);
  try {
    assert.equal(server.pending('a'), 0);
    cli.append(rows('a', 0, 2), 100);
    assert.equal(server.take('a', 10).length, 2, 'take reads the file, not the counts');
    assert.equal(server.recount('a'), 2);
  } finally {
    server.close();
    cli.close();
    done();
  }
});
