// The CLI's configuration check and version, run as a user runs them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { runCli } from '../support/stevedore.js';

const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

test('--version prints the package version', async () => {
  for (const flag of ['--version', '-V']) {
    const res = await runCli([flag]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout.trim(), version);
  }
});

test('config check prints the configuration in effect with every secret masked, and exits 2 naming a bad key', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-config-check-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'mirror.yml');
  writeFileSync(file, [
    'listen: "127.0.0.1:5999"',
    'cache:',
    '  tagTtl: 5m',
    'upstreams:',
    '  - registry: docker.io',
    '    proxy: http://proxyuser:proxy-pass-123@127.0.0.1:3128',
    '    endpoints:',
    '      - url: https://registry-1.docker.io',
    '        username: hubuser',
    '        password: hub-secret-pw',
    'notifications:',
    '  endpoints:',
    '    - name: hook',
    '      url: https://hooks.example.com/in?token=hook-query-tok',
    '      headers: { Authorization: "Bearer hook-header-tok" }',
    '      secret: hook-hmac-key',
    '',
  ].join('\n'));
  const secrets = { STEVEDORE_ADMIN_TOKEN: 'admin-token-456', STEVEDORE_CLUSTER_SECRET: 'cluster-secret-789', STEVEDORE_STORAGE_S3_SECRETACCESSKEY: 'aws-secret-000' };
  const res = await runCli(['config', 'check', '--config', file], { env: secrets });
  assert.equal(res.code, 0, res.stderr);
  for (const secret of ['hub-secret-pw', 'proxy-pass-123', 'hook-query-tok', 'hook-header-tok', 'hook-hmac-key', ...Object.values(secrets)]) assert.ok(!res.stdout.includes(secret), `${secret} is masked`);
  const shown = parse(res.stdout) as Record<string, any>;
  assert.equal(shown.listen, '127.0.0.1:5999', 'the file');
  assert.equal(shown.cache.tagTtl, 300_000, 'parsed: milliseconds');
  assert.equal(shown.cache.maxStale, 7 * 24 * 3_600_000, 'a default');
  assert.equal(shown.admin.token, '<set>', 'the environment');
  assert.equal(shown.cluster.secret, '<set>');
  assert.equal(shown.storage.s3.secretAccessKey, '<set>');
  assert.equal(shown.upstreams[0].endpoints[0].username, 'hubuser', 'user names are not secrets');
  assert.equal(shown.upstreams[0].endpoints[0].password, '<set>');
  assert.equal(shown.upstreams[0].proxy, 'http://proxyuser:xxxxx@127.0.0.1:3128');
  assert.equal(shown.storage.s3.accessKeyId, '', 'unset keys stay empty, not "<set>"');

  // Offload on a public listen would hand direct clients empty blob bodies: serve refuses to start.
  writeFileSync(file, 'listen: "0.0.0.0:5999"\noffload:\n  header: X-Accel-Redirect\n');
  const offload = await runCli(['serve', '--config', file], { timeoutMs: 30_000 });
  assert.equal(offload.code, 2, offload.stderr);
  assert.match(offload.stderr, /"offload\.header".*loopback address/);

  writeFileSync(file, 'cache:\n  tagTtl: soon\n');
  const bad = await runCli(['config', 'check', '--config', file]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /"cache\.tagTtl".*duration/);
  assert.equal(bad.stdout, '');
});
