import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_MEMORY_BUDGET_BYTES } from '../../src/cache/memory-budget.js';
import { ConfigError, loadConfig } from '../../src/config/load.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

function scratch(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('the shipped mirror.yml equals the built-in defaults', (t) => {
  const fromFile = loadConfig({ file: join(repoRoot, 'mirror.yml'), env: {}, cwd: repoRoot });
  const builtIn = loadConfig({ env: {}, cwd: scratch(t) });
  assert.equal(fromFile.listen, '0.0.0.0:5000');
  assert.equal(fromFile.cache.tagTtl, 600_000);
  assert.equal(fromFile.cache.maxManifestSize, 4 * 1024 * 1024);
  // The default the cache falls back to when opened without a config is the config's.
  assert.equal(fromFile.cache.memoryBudget, 16 * 1024 * 1024);
  assert.equal(builtIn.cache.memoryBudget, DEFAULT_MEMORY_BUDGET_BYTES);
  assert.equal(fromFile.upstreams[0]?.endpoints[0]?.url, 'https://registry-1.docker.io');
  assert.equal(fromFile.cache.dir, join(repoRoot, 'data'));
  const { source: _a, cache: c1, ...restFile } = fromFile;
  const { source: _b, cache: c2, ...restBuiltIn } = builtIn;
  assert.deepEqual(restFile, restBuiltIn);
  assert.deepEqual({ ...c1, dir: '' }, { ...c2, dir: '' });
});

test('environment overrides follow STEVEDORE_<KEY_PATH>, with _FILE secrets', (t) => {
  const dir = scratch(t);
  writeFileSync(join(dir, 'secret'), 'hunter2\n');
  const config = loadConfig({
    cwd: dir,
    env: {
      STEVEDORE_LISTEN: '127.0.0.1:6000',
      STEVEDORE_CACHE_TAGTTL: '5m',
      STEVEDORE_CACHE_MEMORYBUDGET: '48MiB',
      STEVEDORE_UPSTREAMS_0_ENDPOINTS_0_USERNAME: 'bob',
      STEVEDORE_UPSTREAMS_0_ENDPOINTS_0_PASSWORD_FILE: join(dir, 'secret'),
    },
  });
  assert.equal(config.listen, '127.0.0.1:6000');
  assert.equal(config.cache.tagTtl, 300_000);
  assert.equal(config.cache.memoryBudget, 48 * 1024 * 1024);
  assert.equal(config.upstreams[0]?.registry, 'docker.io');
  assert.equal(config.upstreams[0]?.endpoints[0]?.username, 'bob');
  assert.equal(config.upstreams[0]?.endpoints[0]?.password, 'hunter2');
});

test('security keys have environment overrides too, and their paths resolve from the working directory', (t) => {
  const dir = scratch(t);
  const config = loadConfig({
    cwd: dir,
    env: {
      STEVEDORE_LIMITS_MAXCONNECTIONS: '64',
      STEVEDORE_LIMITS_SHUTDOWNGRACE: '5s',
      STEVEDORE_AUTH_HTPASSWD: 'users.htpasswd',
      STEVEDORE_TLS_CERT: 'tls/server.crt',
      STEVEDORE_TLS_KEY: 'tls/server.key',
      STEVEDORE_UPSTREAMS_0_ALLOWLINKLOCAL: 'true',
    },
  });
  assert.equal(config.limits.maxConnections, 64);
  assert.equal(config.limits.shutdownGrace, 5_000);
  assert.equal(config.auth.htpasswd, join(dir, 'users.htpasswd'));
  assert.equal(config.tls.cert, join(dir, 'tls/server.crt'));
  assert.equal(config.tls.key, join(dir, 'tls/server.key'));
  assert.equal(config.upstreams[0]?.allowLinkLocal, true);
});

test('validation errors name the bad key', (t) => {
  const dir = scratch(t);
  const cases: [string, RegExp][] = [
    ['cache:\n  tagTtl: soon\n', /"cache\.tagTtl".*duration/],
    ['cache:\n  tagTTL: 5m\n', /unknown config key "cache\.tagTTL"/],
    ['cache:\n  memoryBudget: 4MiB\n', /"cache\.memoryBudget": at least 8MiB/],
    ['cache:\n  memoryBudget: plenty\n', /"cache\.memoryBudget".*a size such as/],
    ['listen: nowhere\n', /"listen"/],
    ['upstreams:\n  - registry: docker.io\n    endpoints:\n      - url: ftp://x\n', /"upstreams\.0\.endpoints\.0\.url"/],
    ['upstreams: []\n', /"upstreams"/],
    ['logLevel: loud\n', /"logLevel"/],
    ['- just\n- a list\n', /mapping/],
    ['tls:\n  cert: server.crt\n', /"tls".*set both cert and key/],
    ['limits:\n  maxConnections: 0\n', /"limits\.maxConnections"/],
    ['limits:\n  headersTimeout: slow\n', /"limits\.headersTimeout".*duration/],
    ['auth:\n  access:\n    - allow: ["docker.io/**"]\n', /"auth\.access\.0\.user"/],
    ['auth:\n  realm: \'say "hi"\'\n', /"auth\.realm"/],
    // Two entries for one registry (or an alias of another), and a default no entry serves.
    ['upstreams:\n  - registry: docker.io\n    endpoints: [{url: "https://a.example"}]\n  - registry: docker.io\n    endpoints: [{url: "https://b.example"}]\n', /"upstreams\.1\.registry".*already configured by upstreams\[0\]/],
    ['upstreams:\n  - registry: docker.io\n    aliases: [mirror.gcr.io]\n    endpoints: [{url: "https://a.example"}]\n  - registry: mirror.gcr.io\n    endpoints: [{url: "https://b.example"}]\n', /"upstreams\.1\.registry".*"mirror\.gcr\.io" is already configured/],
    ['defaultRegistry: ghcr.io\n', /"defaultRegistry".*"ghcr\.io" is not a configured upstream/],
    ['offload:\n  header: X-Accel-Redirect\n', /"offload\.header".*loopback address.*0\.0\.0\.0:5000/],
    ['trustProxy: "yes"\n', /"trustProxy"/],
    ['admin:\n  listen: everywhere\n', /"admin\.listen"/],
    ['upstreams:\n  - registry: docker.io\n    proxy: socks5://p:1080\n    endpoints: [{url: "https://a.example"}]\n', /"upstreams\.0\.proxy"/],
  ];
  for (const [yaml, expected] of cases) {
    writeFileSync(join(dir, 'm.yml'), yaml);
    assert.throws(() => loadConfig({ file: 'm.yml', cwd: dir, env: {} }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, expected, yaml);
      return true;
    });
  }
  assert.throws(() => loadConfig({ cwd: dir, env: { STEVEDORE_CACHE_NOPE: '1' } }), /STEVEDORE_CACHE_NOPE names no config key/);
  // Offload behind nginx on loopback is the supported shape.
  writeFileSync(join(dir, 'm.yml'), 'listen: "127.0.0.1:5000"\noffload:\n  header: X-Accel-Redirect\n');
  assert.equal(loadConfig({ file: 'm.yml', cwd: dir, env: {} }).offload.header, 'X-Accel-Redirect');
});

test('notification endpoints: defaults, env overrides with a _FILE secret, and errors that name the key', (t) => {
  const dir = scratch(t);
  const secret = join(dir, 'hook-secret');
  writeFileSync(secret, 'from-a-file\n');
  const file = join(dir, 'mirror.yml');
  writeFileSync(file, 'notifications:\n  endpoints:\n    - name: ci\n      url: https://hooks.example.com/in\n');
  const config = loadConfig({ file, env: { STEVEDORE_NOTIFICATIONS_ENDPOINTS_0_TIMEOUT: '2s', STEVEDORE_NOTIFICATIONS_ENDPOINTS_0_SECRET_FILE: secret, STEVEDORE_NOTIFICATIONS_MAXPENDING: '50' }, cwd: dir });
  const endpoint = config.notifications.endpoints[0]!;
  assert.deepEqual(
    [endpoint.timeout, endpoint.secret, config.notifications.maxPending, endpoint.threshold, endpoint.backoff, endpoint.maxBackoff, endpoint.format, endpoint.batch],
    [2_000, 'from-a-file', 50, 3, 1_000, 300_000, 'v2', { maxEvents: 100, maxWait: 1_000 }],
  );
  const invalid = (yaml: string, key: RegExp): void => {
    writeFileSync(file, yaml);
    assert.throws(() => loadConfig({ file, env: {}, cwd: dir }), (err: Error) => err instanceof ConfigError && key.test(err.message), yaml);
  };
  invalid('notifications:\n  endpoints:\n    - name: a\n      url: ftp://x/\n', /"notifications\.endpoints\.0\.url"/);
  invalid('notifications:\n  endpoints:\n    - name: a\n      url: https://u:p@x/\n', /"notifications\.endpoints\.0\.url": put credentials in headers/);
  invalid('notifications:\n  endpoints:\n    - { name: a, url: "https://x/" }\n    - { name: a, url: "https://y/" }\n', /"notifications\.endpoints\.1\.name"/);
  invalid('notifications:\n  endpoints:\n    - { name: a, url: "https://x/", batch: { maxWait: soon } }\n', /"notifications\.endpoints\.0\.batch\.maxWait"/);
  invalid('notifications:\n  endpoints:\n    - { name: a, url: "https://x/", ignore: { actions: ["Pull!"] } }\n', /"notifications\.endpoints\.0\.ignore\.actions\.0"/);
  invalid('notifications:\n  endpoints:\n    - { name: a, url: "https://x/", retries: 3 }\n', /unknown config key "notifications\.endpoints\.0\.retries"/);
  invalid('notifications:\n  endpoints:\n    - { name: a, url: "hooks.example.com/in" }\n', /"notifications\.endpoints\.0\.url": expected an http/);
  invalid('notifications:\n  endpoints:\n    - { name: a, url: "https://x/", headers: { Content-Length: "5" } }\n', /"notifications\.endpoints\.0\.headers\.Content-Length": set by Stevedore/);
  invalid('notifications:\n  endpoints:\n    - { name: a, url: "https://x/", headers: { X-A: "a\\r\\nX-B: b" } }\n', /"notifications\.endpoints\.0\.headers\.X-A": header values may not hold CR/);
  invalid('notifications:\n  endpoints:\n    - { name: a, url: "https://x/", timeout: 0s }\n', /"notifications\.endpoints\.0\.timeout": between 100ms and 10m/);
  invalid('notifications:\n  endpoints:\n    - { name: a, url: "https://x/", maxBackoff: 30d }\n', /"notifications\.endpoints\.0\.maxBackoff": between 10ms and 1d/);
  const empty = join(dir, 'empty');
  writeFileSync(empty, '\n');
  invalid(`notifications:\n  endpoints:\n    - { name: a, url: "https://x/", secretFile: ${empty} }\n`, /"notifications\.endpoints\.0\.secretFile": the file is empty/);
  const token = join(dir, 'token');
  writeFileSync(token, 'Bearer from-a-file\n');
  writeFileSync(file, `notifications:\n  endpoints:\n    - { name: a, url: "https://x/", headerFiles: { Authorization: ${token} } }\n`);
  assert.deepEqual(loadConfig({ file, env: {}, cwd: dir }).notifications.endpoints[0]!.headers, { Authorization: 'Bearer from-a-file' });
});
