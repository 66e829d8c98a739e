import { test } from 'node:test';
import assert from 'node:assert/strict';
import { globToRegExp, UpstreamResolver } from '../../src/mirror/resolve.js';
import { isRegistryError } from '../../src/oci/errors.js';
import type { UpstreamRegistry } from '../../src/upstream/upstream-registry.js';

const fake = (name: string): UpstreamRegistry => ({ name }) as UpstreamRegistry;
const hub = fake('docker.io');
const ghcr = fake('ghcr.io');
const resolver = new UpstreamResolver(
  [
    { registry: hub, aliases: ['index.docker.io'], allow: [], deny: ['evil/*'] },
    { registry: ghcr, aliases: [], allow: ['acme/**'], deny: [] },
  ],
  'docker.io',
);

const status = (fn: () => unknown): string => {
  try {
    fn();
    return 'ok';
  } catch (err) {
    assert.ok(isRegistryError(err));
    return `${err.status} ${err.code}`;
  }
};

test('the three ways to name a registry', () => {
  assert.equal(resolver.resolve('nginx', undefined, []).repo, 'library/nginx');
  assert.equal(resolver.resolve('library/nginx', undefined, []).repo, 'library/nginx');
  assert.equal(resolver.resolve('nginx', 'docker.io', []).repo, 'library/nginx');
  assert.equal(resolver.resolve('nginx', 'index.docker.io', []).upstream, hub);
  const prefixed = resolver.resolve('ghcr.io/acme/tool', undefined, ['a']);
  assert.deepEqual({ r: prefixed.registry, repo: prefixed.repo, via: prefixed.via }, { r: 'ghcr.io', repo: 'acme/tool', via: ['a'] });
  assert.equal(resolver.resolve('ghcr.io/acme/tool', 'ghcr.io', []).repo, 'acme/tool');
  assert.equal(resolver.resolve('acme/tool', 'ghcr.io', []).registry, 'ghcr.io');
});

test('only configured registries, only allowed repositories', () => {
  assert.equal(status(() => resolver.resolve('x', 'quay.io', [])), '404 NAME_UNKNOWN');
  assert.equal(status(() => resolver.resolve('quay.io/x/y', undefined, [])), '404 NAME_UNKNOWN');
  assert.equal(status(() => resolver.resolve('evil/x', undefined, [])), '403 DENIED');
  assert.equal(status(() => resolver.resolve('ghcr.io/other/x', undefined, [])), '403 DENIED');
  assert.equal(status(() => resolver.resolve('ghcr.io/acme/a/b/c', undefined, [])), 'ok');
  assert.equal(status(() => resolver.resolve('../x', undefined, [])), '400 NAME_INVALID');
});

test('globs: * within a component, ** across', () => {
  assert.ok(globToRegExp('library/*').test('library/nginx'));
  assert.ok(!globToRegExp('library/*').test('library/a/b'));
  assert.ok(globToRegExp('team/**').test('team/a/b/c'));
  assert.ok(!globToRegExp('a.b/*').test('axb/c'), 'dots are literal');
});
