import { nameInvalid, nameUnknown } from '../oci/errors.js';
import { looksLikeRegistryHost, MAX_NAME_LENGTH, validateRepository } from '../oci/reference.js';
import type { UpstreamRegistry } from '../upstream/upstream-registry.js';

/** Which configured registry and repository a client's request names. */
export interface Target {
  upstream: UpstreamRegistry;
  registry: string;
  repo: string;
}

/**
 * Maps the three ways clients name a registry onto configured upstreams only:
 * containerd's `?ns=`, a path prefix (`ghcr.io/owner/repo`), or the default
 * (Docker Hub for dockerd's `registry-mirrors`). Nothing else is reachable.
 */
export class UpstreamResolver {
  private readonly byName = new Map<string, UpstreamRegistry>();

  constructor(
    upstreams: readonly { registry: UpstreamRegistry; aliases: readonly string[] }[],
    private readonly defaultRegistry: string,
  ) {
    for (const { registry, aliases } of upstreams) {
      for (const name of [registry.name, ...aliases]) this.byName.set(name.toLowerCase(), registry);
    }
  }

  resolve(name: string, ns?: string): Target {
    if (name.length > MAX_NAME_LENGTH) throw nameInvalid(`repository name longer than ${MAX_NAME_LENGTH} characters`);
    const slash = name.indexOf('/');
    const first = slash > 0 ? name.slice(0, slash) : '';
    if (ns !== undefined) {
      const upstream = this.lookup(ns, name);
      // A path prefix naming the same registry is redundant: drop it.
      const prefixed = first !== '' && this.byName.get(first.toLowerCase()) === upstream;
      return this.target(upstream, prefixed ? name.slice(slash + 1) : name);
    }
    if (first && looksLikeRegistryHost(first)) return this.target(this.lookup(first, name), name.slice(slash + 1));
    return this.target(this.lookup(this.defaultRegistry, name), name);
  }

  registries(): UpstreamRegistry[] {
    return [...new Set(this.byName.values())];
  }

  private lookup(registry: string, name: string): UpstreamRegistry {
    const upstream = this.byName.get(registry.toLowerCase());
    if (!upstream) throw nameUnknown(name, `registry "${registry.slice(0, 100)}" is not configured on this mirror`);
    return upstream;
  }

  private target(upstream: UpstreamRegistry, repo: string): Target {
    validateRepository(repo);
    // Docker Hub's official images live under library/.
    const normalized = upstream.name === 'docker.io' && !repo.includes('/') ? `library/${repo}` : repo;
    return { upstream, registry: upstream.name, repo: normalized };
  }
}
