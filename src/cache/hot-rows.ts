import { LRUCache } from 'lru-cache';
import type { BlobRecord, CacheIndex, TagRecord } from './cache-index.js';
import type { CacheMemory } from './memory-budget.js';

/** A base layer can be shared by thousands of repositories: remember a bounded few per digest. */
const MAX_REMEMBERED_OWNERS = 256;

/** One key per (registry, repository, reference, accepted manifest types): the tag cache's, and the mirror's for coalescing. */
export const tagKey = (upstream: string, repo: string, reference: string, acceptKey: string): string => `${upstream}/${repo}:${reference}\n${acceptKey}`;

/**
 * The index rows a cache hit reads (blob records, tags, repository links),
 * kept in memory in front of SQLite so that a hot pull runs no query. Reads
 * go through here; every write of a row drops or replaces its copy.
 */
export class HotRows {
  private readonly records: LRUCache<string, BlobRecord>;
  private readonly tags: LRUCache<string, TagRecord>;
  /** Which remembered tags point at a manifest, so removing it forgets just those. */
  private readonly tagKeysByDigest = new Map<string, Set<string>>();
  /** Repositories each digest is known to belong to (positive answers only; SQLite has the rest). */
  private readonly links: LRUCache<string, Set<string>>;

  /** At most `limits` rows of each kind (cache.memoryBudget's shares). */
  constructor(
    private readonly index: CacheIndex,
    limits: Pick<CacheMemory, 'blobRecords' | 'tags' | 'linkSets'>,
  ) {
    this.records = new LRUCache({ max: limits.blobRecords });
    this.links = new LRUCache({ max: limits.linkSets });
    this.tags = new LRUCache({
      max: limits.tags,
      dispose: (record, key) => {
        const keys = this.tagKeysByDigest.get(record.digest);
        keys?.delete(key);
        if (keys?.size === 0) this.tagKeysByDigest.delete(record.digest);
      },
    });
  }

  /** Rows of each kind held now. */
  get held(): { blobRecords: number; tags: number; linkSets: number } {
    return { blobRecords: this.records.size, tags: this.tags.size, linkSets: this.links.size };
  }

  blob(digest: string): BlobRecord | undefined {
    const remembered = this.records.get(digest);
    if (remembered) return remembered;
    const record = this.index.getBlob(digest);
    if (record) this.records.set(digest, record);
    return record;
  }

  /** A blob row changed in the index: read it afresh next time. */
  blobChanged(digest: string): void {
    this.records.delete(digest);
  }

  tag(upstream: string, repo: string, tag: string, acceptKey: string): TagRecord | undefined {
    const remembered = this.tags.get(tagKey(upstream, repo, tag, acceptKey));
    if (remembered) return remembered;
    const record = this.index.getTag(upstream, repo, tag, acceptKey);
    if (record) this.rememberTag(record);
    return record;
  }

  putTag(record: TagRecord): void {
    this.index.putTag(record);
    this.rememberTag(record);
  }

  belongsTo(upstream: string, repo: string, digest: string): boolean {
    const owner = `${upstream}/${repo}`;
    if (this.links.get(digest)?.has(owner)) return true;
    if (!this.index.isLinked(upstream, repo, digest)) return false;
    this.rememberLink(digest, owner);
    return true;
  }

  link(upstream: string, repo: string, digest: string): void {
    this.index.linkRepo(upstream, repo, digest);
    this.rememberLink(digest, `${upstream}/${repo}`);
  }

  /** The blob and everything that pointed at it left the index: forget their copies. */
  forget(digest: string): void {
    this.records.delete(digest);
    this.links.delete(digest);
    for (const key of this.tagKeysByDigest.get(digest) ?? []) this.tags.delete(key);
    this.tagKeysByDigest.delete(digest);
  }

  private rememberTag(record: TagRecord): void {
    const key = tagKey(record.upstream, record.repo, record.tag, record.acceptKey);
    this.tags.set(key, record);
    const keys = this.tagKeysByDigest.get(record.digest) ?? new Set<string>();
    keys.add(key);
    this.tagKeysByDigest.set(record.digest, keys);
  }

  private rememberLink(digest: string, owner: string): void {
    let owners = this.links.get(digest);
    if (!owners || owners.size >= MAX_REMEMBERED_OWNERS) {
      owners = new Set();
      this.links.set(digest, owners);
    }
    owners.add(owner);
  }
}
