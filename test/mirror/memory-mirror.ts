// A mirror over a real cache on a temp dir, with its upstream faked in memory: for tests of what the mirror
// and the jobs on it tell their listeners, without sockets.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { Cache } from '../../src/cache/cache.js';
import { CacheDatabase } from '../../src/cache/database.js';
import { createLogger, type Logger } from '../../src/log.js';
import { Mirror, type MirrorEvents, type Target } from '../../src/mirror/mirror.js';
import { UpstreamResolver } from '../../src/mirror/resolve.js';
import { digestOf } from '../../src/oci/digest.js';
import { blobUnknown, manifestUnknown } from '../../src/oci/errors.js';
import { cacheModes, FsStore } from '../../src/storage/fs-store.js';
import type { EndpointClient } from '../../src/upstream/endpoint-client.js';
import { Semaphore } from '../../src/upstream/semaphore.js';
import type { UpstreamRegistry } from '../../src/upstream/upstream-registry.js';

export const ENDPOINT = 'https://up.example';
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** An upstream in memory: blobs by digest (served as given, matching or not), manifests by tag or digest. */
export class FakeUpstream {
  readonly blobs = new Map<string, Buffer>();
  readonly manifests = new Map<string, Buffer>();
  heads = 0;
  /** What budgetLow() answers: true stops warm-ups. */
  lowBudget = false;
  readonly endpoint = { displayUrl: ENDPOINT, state: { failure: () => undefined } } as unknown as EndpointClient;

  registry(): UpstreamRegistry {
    return {
      name: 'docker.io',
      endpoints: [this.endpoint],
      settings: { tagTtlMs: undefined, maxConcurrentFetches: 4, maxQueuedFetches: 4 },
      fetchSlots: new Semaphore(4, 4),
      budgetLow: () => this.lowBudget,
      openBlob: async (_repo: string, digest: string) => {
        const bytes = this.blobs.get(digest);
        if (!bytes) throw blobUnknown(digest);
        return { size: bytes.length, body: Readable.from([bytes]), endpoint: this.endpoint, skip: 0 };
      },
      fetchManifest: async (_repo: string, reference: string) => {
        const bytes = this.manifests.get(reference);
        if (!bytes) throw manifestUnknown(reference);
        return { bytes, contentType: OCI_MANIFEST, digest: undefined, endpoint: ENDPOINT };
      },
      headManifest: async (_repo: string, reference: string) => {
        this.heads += 1;
        const bytes = this.manifests.get(reference);
        if (!bytes) throw manifestUnknown(reference);
        return { digest: digestOf(bytes), contentType: OCI_MANIFEST, size: bytes.length };
      },
    } as unknown as UpstreamRegistry;
  }
}

export interface MemoryMirror {
  mirror: Mirror;
  /** acme/app on docker.io, the fake upstream. */
  target: Target;
  upstream: FakeUpstream;
  /** The fill events, in order: [name, event]. */
  seen: [string, Record<string, unknown>][];
  cache: Cache;
  database: CacheDatabase;
}

export const quiet: Logger = createLogger('silent', new Writable({ write: (_chunk, _enc, cb) => cb() }));

/** An OCI image manifest of one layer; `note` makes its config (and so its digest) differ. */
export function manifestOf(layer: Buffer, note: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digestOf(Buffer.from(note)), size: note.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: digestOf(layer), size: layer.length }],
    }),
  );
}

/** A mirror of one upstream, docker.io, that every tag pull revalidates (tagTtl 0); removed after the test. */
export async function memoryMirror(t: { after(fn: () => void | Promise<void>): void }): Promise<MemoryMirror> {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-memory-mirror-'));
  const database = new CacheDatabase(join(dir, 'index.db'));
  const store = new FsStore(join(dir, 'blobs'), cacheModes(false));
  await store.init();
  const cache = await Cache.open({ database, store, accessFlushIntervalMs: 60_000, owner: true });
  const upstream = new FakeUpstream();
  const seen: [string, Record<string, unknown>][] = [];
  const events: MirrorEvents = {
    upstreamBytes: () => undefined,
    uncached: () => undefined,
    filled: (e) => seen.push(['filled', { ...e }]),
    fillFailed: (e) => seen.push(['fillFailed', { ...e }]),
    digestMismatch: (e) => seen.push(['digestMismatch', { ...e }]),
  };
  const mirror = new Mirror({
    cache,
    listings: database.listings,
    resolver: new UpstreamResolver([{ registry: upstream.registry(), aliases: [], allow: [], deny: [] }], 'docker.io'),
    // tagTtl 0: every pull of a tag revalidates it with a HEAD.
    policy: { tagTtlMs: 0, notFoundTtlMs: 0, maxStaleMs: 0, maxStaleDeniedMs: 0, maxManifestBytes: 1 << 20, revalidateTimeoutMs: 5_000 },
    fillLimits: { maxFillsPerClient: 0 },
    log: quiet,
    events,
  });
  t.after(async () => {
    await mirror.fills.drain(5_000);
    await cache.close();
    database.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { mirror, target: mirror.resolve('acme/app', undefined, []), upstream, seen, cache, database };
}
