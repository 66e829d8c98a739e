import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEgress, maskCredentials, type EgressOptions } from '../../src/upstream/egress.js';
import { TargetAllowance } from '../../src/upstream/address-guard.js';

const base: EgressOptions = {
  proxy: '',
  caFile: '',
  connectTimeoutMs: 1_000,
  headersTimeoutMs: 1_000,
  bodyTimeoutMs: 1_000,
  connections: 4,
  keepAliveTimeoutMs: 1_000,
  allowance: new TargetAllowance('registry.example'),
  env: {},
};

async function proxyOf(options: Partial<EgressOptions>): Promise<string | undefined> {
  const egress = createEgress({ ...base, ...options });
  await egress.dispatcher.close();
  return egress.proxy;
}

test('proxy credentials are masked for logs', () => {
  assert.equal(maskCredentials('http://ci:s3cret@proxy.internal:3128'), 'http://***@proxy.internal:3128/');
  assert.equal(maskCredentials('http://proxy.internal:3128'), 'http://proxy.internal:3128/');
  assert.doesNotMatch(maskCredentials('https://:s3cret@proxy.internal'), /s3cret/);
});

test('the environment decides with an empty proxy, lower case first; none and an explicit URL ignore it', async () => {
  assert.equal(await proxyOf({ env: {} }), undefined);
  assert.equal(await proxyOf({ env: { HTTPS_PROXY: '', HTTP_PROXY: '' } }), undefined);
  assert.equal(await proxyOf({ env: { https_proxy: 'http://lower:1', HTTPS_PROXY: 'http://upper:2' } }), 'https: http://lower:1/');
  const fromEnv = await proxyOf({ env: { HTTP_PROXY: 'http://ci:s3cret@proxy:3128', NO_PROXY: 'localhost' } });
  assert.equal(fromEnv, 'http: http://***@proxy:3128/, no_proxy: localhost');
  assert.equal(await proxyOf({ proxy: 'none', env: { HTTPS_PROXY: 'http://proxy:3128' } }), undefined);
  assert.equal(await proxyOf({ proxy: 'http://ci:s3cret@other:8080', env: { HTTPS_PROXY: 'http://proxy:3128' } }), 'http://***@other:8080/');
});

test('a CA file that cannot be read or holds no certificate stops the start with a clear message', () => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-egress-'));
  try {
    assert.throws(() => createEgress({ ...base, caFile: join(dir, 'missing.pem') }), /upstream CA file .*missing\.pem cannot be read/);
    writeFileSync(join(dir, 'empty.pem'), 'not a certificate\n');
    assert.throws(() => createEgress({ ...base, caFile: join(dir, 'empty.pem') }), /holds no PEM certificate/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
