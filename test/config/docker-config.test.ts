import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load.js';

test('endpoints without credentials take them from a Docker config.json', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-dockercfg-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({
      auths: {
        'https://index.docker.io/v1/': { auth: Buffer.from('hubuser:hub:pass').toString('base64') },
        'ghcr.io': { username: 'gh', password: 'ghp' },
      },
    }),
  );
  writeFileSync(
    join(dir, 'mirror.yml'),
    [
      'dockerConfig: config.json',
      'upstreams:',
      '  - registry: docker.io',
      '    endpoints: [{ url: "https://registry-1.docker.io" }]',
      '  - registry: ghcr.io',
      '    endpoints: [{ url: "https://ghcr.io", username: own, password: mine }]',
      '  - registry: quay.io',
      '    endpoints: [{ url: "https://quay.io" }]',
    ].join('\n'),
  );
  const config = loadConfig({ cwd: dir, env: {} });
  assert.deepEqual(config.upstreams.map((u) => [u.endpoints[0]!.username, u.endpoints[0]!.password]), [
    ['hubuser', 'hub:pass'],
    ['own', 'mine'],
    ['', ''],
  ]);
  writeFileSync(join(dir, 'config.json'), '{not json');
  assert.throws(() => loadConfig({ cwd: dir, env: {} }), /invalid config key "dockerConfig"/);
});
