import { LRUCache } from 'lru-cache';
import { denied, nameInvalid, nameUnknown } from '../oci/errors.js';
import { looksLikeRegistryHost, MAX_NAME_LENGTH, validateRepository } from '../oci/reference.js';
import type { UpstreamRegistry } from '../upstream/upstream-registry.js';

/** Which configured registry and repository a client's request names. */
export interface Target {
  upstream: UpstreamRegistry;
  registry: string;
  repo: string;
  /** Mirrors this request passed through, this one last; sent to parent mirrors. */
  via: readonly string[];
}

export interface UpstreamEntry {
  registry: UpstreamRegistry;
  aliases: readonly string[];
  /** Repository patterns; when non-empty, only matching repositories may be pulled. */
  allow: readonly string[];
  /** Repository patterns that may never be pulled. */
  deny: readonly string[];
}

const DOCKER_HUB = 'docker.io';
/** A registry host name with an optional port, ASCII only. */
const REGISTRY_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?(?::[0-9]{1,5})?$/;

interface Policy {
  allow: RegExp[];
  deny: RegExp[];
}

/**
 * Maps the three ways clients name a registry onto configured upstreams only:
 * containerd's `?ns=`, a path prefix (`ghcr.io/owner/repo`), or the default
 * (Docker Hub for dockerd's `registry-mirrors`). Nothing else is reachable.
 */
export class UpstreamResolver {
  private readonly byName = new Map<string, UpstreamRegistry>();
  private readonly policies = new Map<UpstreamRegistry, Policy>();
  /** Names clients asked for, resolved and validated: a hot image costs no grammar checks. */
  private readonly resolved = new LRUCache<string, { upstream: UpstreamRegistry; repo: string }>({ max: 10_000 });

  constructor(
    upstreams: readonly UpstreamEntry[],
    private readonly defaultRegistry: string,
  ) {
    for (const { registry, aliases, allow, deny } of upstreams) {
      for (const name of [registry.name, ...aliases]) this.byName.set(name.toLowerCase(), registry);
      this.policies.set(registry, { allow: allow.map(globToRegExp), deny: deny.map(globToRegExp) });
    }
  }

  resolve(name: string, ns: string | undefined, via: readonly string[]): Target {
    const key = `${ns ?? ''}\n${name}`;
    const known = this.resolved.get(key);
    if (known) return { upstream: known.upstream, registry: known.upstream.name, repo: known.repo, via };
    const target = this.resolveName(name, ns, via);
    this.resolved.set(key, { upstream: target.upstream, repo: target.repo });
    return target;
  }

  private resolveName(name: string, ns: string | undefined, via: readonly string[]): Target {
    if (name.length > MAX_NAME_LENGTH) throw nameInvalid(`repository name longer than ${MAX_NAME_LENGTH} characters`);
    const slash = name.indexOf('/');
    const first = slash > 0 ? name.slice(0, slash) : '';
    if (ns !== undefined) {
      // Registry names are ASCII: anything else would only lowercase into one (a Kelvin sign into a k).
      if (!REGISTRY_NAME.test(ns)) throw nameInvalid(`ns must be a registry host name such as docker.io, got "${ns.slice(0, 100)}"`);
      const upstream = this.lookup(ns, name);
      // A path prefix naming the same registry is redundant: drop it.
      const prefixed = first !== '' && this.byName.get(first.toLowerCase()) === upstream;
      return this.target(upstream, prefixed ? name.slice(slash + 1) : name, via);
    }
    if (first && looksLikeRegistryHost(first)) return this.target(this.lookup(first, name), name.slice(slash + 1), via);
    return this.target(this.lookup(this.defaultRegistry, name), name, via);
  }

  registries(): UpstreamRegistry[] {
    return [...new Set(this.byName.values())];
  }

  private lookup(registry: string, name: string): UpstreamRegistry {
    const upstream = this.byName.get(registry.toLowerCase());
    if (!upstream) throw nameUnknown(name, `registry "${registry.slice(0, 100)}" is not configured on this mirror`);
    return upstream;
  }

  private target(upstream: UpstreamRegistry, repo: string, via: readonly string[]): Target {
    const slash = repo.indexOf('/');
    // Docker Hub namespaces never hold a dot or a colon: such a first component is a
    // registry host the client meant (169.254.169.254/latest), not a Hub repository.
    if (upstream.name === DOCKER_HUB && slash > 0 && looksLikeRegistryHost(repo.slice(0, slash))) {
      throw nameUnknown(repo, `"${repo.slice(0, slash).slice(0, 100)}" names a registry host, and it is not configured on this mirror`);
    }
    // Docker Hub's official images live under library/; the name the upstream sees is the one to check.
    const normalized = upstream.name === DOCKER_HUB && slash < 0 ? `library/${repo}` : repo;
    validateRepository(normalized);
    const policy = this.policies.get(upstream);
    if (policy) {
      if (policy.deny.some((p) => p.test(normalized)) || (policy.allow.length > 0 && !policy.allow.some((p) => p.test(normalized)))) {
        throw denied(`repository ${upstream.name}/${normalized} is not allowed on this mirror`);
      }
    }
    return { upstream, registry: upstream.name, repo: normalized, via };
  }
}

/** `*` matches within one path component, `**` across components. */
export function globToRegExp(pattern: string): RegExp {
  const source = pattern
    .split('**')
    .map((part) => part.split('*').map((text) => text.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^/]*'))
    .join('.*');
  return new RegExp(`^${source}$`);
}
