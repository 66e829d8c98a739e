import type { Listings } from '../cache/listings.js';
import type { Logger } from '../log.js';
import { fetchTagList } from '../upstream/listings.js';
import type { CacheOutcome } from './outcome.js';
import type { Target } from './resolve.js';
import { SingleFlight } from './single-flight.js';
import { keepListing, mayServeStale, type StalePolicy } from './stale.js';

export interface TagListPolicy extends StalePolicy {
  tagTtlMs: number;
  /** Bounds each upstream page when a cached list could be served instead. */
  revalidateTimeoutMs: number;
}

export interface TagPage {
  /** At most `n` tags, in lexical order, after `last`. */
  tags: string[];
  /** The `last` of the next page, when there is one. */
  next?: string;
  cache: CacheOutcome;
}

/**
 * Tag lists: the whole list of a repository is fetched once per tagTtl
 * (every upstream page of it), kept in the index, and paged here as the
 * distribution-spec says (`n`, `last`, lexical order), so paging costs the
 * upstream nothing and the list is still served while the upstream is down.
 */
export class TagLists {
  private readonly fetches = new SingleFlight<string[]>();

  constructor(
    private readonly listings: Listings,
    private readonly policy: TagListPolicy,
    private readonly clock: { now(): number },
    private readonly log: Logger,
  ) {}

  async page(target: Target, n: number | undefined, last: string | undefined): Promise<TagPage> {
    const { tags, cache } = await this.list(target);
    const start = last === undefined ? 0 : firstAfter(tags, last);
    const end = n === undefined ? tags.length : Math.min(tags.length, start + n);
    const page = tags.slice(start, end);
    return { tags: page, ...(end < tags.length && page.length > 0 ? { next: page[page.length - 1]! } : {}), cache };
  }

  private async list(target: Target): Promise<{ tags: string[]; cache: CacheOutcome }> {
    const cached = this.listings.tagList(target.registry, target.repo);
    const ttl = target.upstream.settings.tagTtlMs ?? this.policy.tagTtlMs;
    if (cached && this.clock.now() - cached.fetchedAt < ttl) return { tags: cached.tags, cache: 'hit' };
    const { promise, shared } = this.fetches.run(`${target.registry}/${target.repo}`, async () => {
      const fetched = await fetchTagList(target.upstream, { repo: target.repo, via: target.via, ...(cached ? { timeoutMs: this.policy.revalidateTimeoutMs } : {}) });
      if (!fetched.complete) this.log.warn({ upstream: target.registry, repo: target.repo, tags: fetched.tags.length }, 'tag list cut off after the most pages a listing may have');
      const tags = fetched.tags.sort(lexical);
      keepListing(this.log, () => this.listings.putTagList(target.registry, target.repo, { tags, fetchedAt: this.clock.now() }));
      return tags;
    });
    try {
      return { tags: await promise, cache: shared ? 'coalesced' : 'miss' };
    } catch (err) {
      if (!cached || !mayServeStale(err, this.clock.now() - cached.fetchedAt, ttl, this.policy)) throw err;
      this.log.warn({ upstream: target.registry, repo: target.repo, cache: 'stale', err: (err as Error).message }, 'tag list fetch failed; serving the cached list');
      return { tags: cached.tags, cache: 'stale' };
    }
  }
}

/** Byte order of the tags, which are ASCII: the spec's lexical order. */
function lexical(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Index of the first tag sorting after `last` (binary search). */
function firstAfter(tags: readonly string[], last: string): number {
  let low = 0;
  let high = tags.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (tags[mid]! <= last) low = mid + 1;
    else high = mid;
  }
  return low;
}
