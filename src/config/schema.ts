import { Cron } from 'croner';
import { z } from 'zod';
import { duration, isHostOrRange, optionalDuration, size } from './fields.js';
import { notificationsSchema } from './notifications-schema.js';
import { parseSize } from './units.js';

const listenAddress = z
  .string()
  .default('0.0.0.0:5000')
  .refine((v) => /^(?:\[[0-9a-fA-F:]+\]|[^:\s]*):\d{1,5}$/.test(v) && Number(v.slice(v.lastIndexOf(':') + 1)) <= 65535, {
    message: 'expected host:port, for example 0.0.0.0:5000',
  });

const endpointSchema = z.strictObject({
  url: z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' }),
  username: z.string().default(''),
  password: z.string().default(''),
  /** Read the password from this file (a mounted secret) when set. */
  passwordFile: z.string().default(''),
  /** The endpoint is another Stevedore: pass ?ns= along and the loop-detection chain. */
  mirror: z.boolean().default(false),
});

const timeoutsSchema = z
  .strictObject({
    connect: duration('10s'),
    headers: duration('30s'),
    body: duration('60s'),
  })
  .prefault({});

const upstreamSchema = z.strictObject({
  registry: z
    .string()
    .min(1)
    .regex(/^[a-z0-9.-]+(?::\d+)?$/, 'expected a registry host name such as docker.io or ghcr.io'),
  aliases: z.array(z.string()).default([]),
  endpoints: z.array(endpointSchema).min(1, 'an upstream needs at least one endpoint'),
  timeouts: timeoutsSchema,
  /** Overrides cache.tagTtl for this registry. */
  tagTtl: optionalDuration,
  /** Blob fills running at once against this registry; more wait their turn. */
  maxConcurrentFetches: z.number().int().min(1).max(10_000).default(32),
  /** Fills that may wait for one of those slots; more get 429 TOOMANYREQUESTS. */
  maxQueuedFetches: z.number().int().min(0).max(1_000_000).default(1024),
  /** Repository patterns (`library/*`, `team/**`): when set, only these may be pulled. */
  allow: z.array(z.string().min(1)).default([]),
  /** Repository patterns that may never be pulled; deny wins over allow. */
  deny: z.array(z.string().min(1)).default([]),
  /** Turn off the guard on redirects and token realms: they may lead to any address. */
  allowLinkLocal: z.boolean().default(false),
  /**
   * A forward proxy for this registry (http://proxy.internal:3128); empty: HTTPS_PROXY,
   * HTTP_PROXY and NO_PROXY from the environment; `none`: always direct.
   */
  proxy: z.union([z.literal(''), z.literal('none'), z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// proxy URL, "none" or empty' })]).default(''),
  /** A PEM file of CA certificates this registry's TLS is checked against, besides the system's. */
  ca: z.string().default(''),
  /** Host names, addresses or CIDR ranges redirects and token realms may reach although they are loopback or private. */
  redirectAllow: z.array(z.string().refine(isHostOrRange, { message: 'expected a host name, an IP address or a CIDR range such as 10.20.0.0/16' })).default([]),
  rateLimit: z
    .strictObject({
      /** Log a warning when ratelimit-remaining falls below this. */
      warnBelow: z.number().int().min(0).default(20),
      /** Below this, cached tags are served without revalidation; only missing content is fetched. */
      minRemaining: z.number().int().min(0).default(5),
    })
    .prefault({}),
});


function isValidCron(expression: string): boolean {
  try {
    new Cron(expression, { paused: true }).stop();
    return true;
  } catch {
    return false;
  }
}

const platform = z.string().regex(/^[a-z0-9]+\/[a-z0-9_]+(?:\/[a-z0-9]+)?$/, 'expected os/arch or os/arch/variant, such as linux/arm64');

const warmupJobSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9._-]+$/, 'letters, digits, dot, dash and underscore only'),
  /** Cron expression (seconds optional), evaluated by croner. */
  schedule: z.string().min(1).refine(isValidCron, { message: 'expected a cron expression such as "0 3 * * *" (seconds optional)' }),
  images: z.array(z.string().min(1)).min(1, 'a warm-up job needs at least one image'),
  platforms: z.union([z.literal('all'), z.array(platform).min(1)]).default('all'),
  pin: z.boolean().default(false),
  concurrency: z.number().int().min(1).max(64).default(4),
});

/** Docker Hub, anonymous: what a mirror with no config file pulls from. */
export const DEFAULT_UPSTREAMS = [
  { registry: 'docker.io', aliases: ['index.docker.io', 'registry-1.docker.io'], endpoints: [{ url: 'https://registry-1.docker.io' }] },
];

const accessRuleSchema = z.strictObject({
  /** A user name from the htpasswd file, or `*` for users without a rule of their own. */
  user: z.string().min(1),
  /** `registry/repository` patterns (`docker.io/library/*`, `ghcr.io/**`) the user may pull. */
  allow: z.array(z.string().min(1)).default([]),
});

const baseSchema = z.strictObject({
  listen: listenAddress,
  /** Behind a proxy or load balancer: take the client's address and scheme from X-Forwarded-For and X-Forwarded-Proto. */
  trustProxy: z.boolean().default(false),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  defaultRegistry: z.string().default('docker.io'),
  cache: z
    .strictObject({
      dir: z.string().min(1).default('./data'),
      tagTtl: duration('10m'),
      maxStale: duration('7d'),
      maxStaleDenied: duration('1h'),
      /** Let the mirror user's group read the cache (nginx offload); otherwise directories are 0700 and files 0600. */
      groupReadable: z.boolean().default(false),
      revalidateTimeout: duration('3s'),
      maxManifestSize: size('4MiB'),
      /** What the in-memory caches (small verified content, hot index rows) may hold together. */
      memoryBudget: size('16MiB').refine((n) => n >= 8 * 1024 * 1024, { message: 'at least 8MiB: below it the caches spare SQLite and the store too little' }),
      accessFlushInterval: duration('5s'),
      notFoundTtl: duration('30s'),
      maxSize: size('0'),
      lowWater: z.number().gt(0).max(1).default(0.9),
      blobIdleTtl: duration('30d'),
      gcGrace: duration('1h'),
      sweepInterval: duration('5m'),
      minFreeSpace: z
        .string()
        .default('5%')
        .transform((text, ctx): { fraction: number } | { bytes: number } => {
          const percent = /^(\d+(?:\.\d+)?)\s*%$/.exec(text.trim());
          if (percent && Number(percent[1]) < 100) return { fraction: Number(percent[1]) / 100 };
          const bytes = percent ? undefined : parseSize(text);
          if (bytes === undefined) {
            ctx.addIssue({ code: 'custom', message: `expected a share of the disk such as 5% or a size such as 20GiB, got "${text}"` });
            return z.NEVER;
          }
          return { bytes };
        }),
    })
    .prefault({}),
  /** Where the bytes of blobs and manifests live; the SQLite index stays in cache.dir either way. */
  storage: z
    .strictObject({
      driver: z.enum(['filesystem', 's3']).default('filesystem'),
      s3: z
        .strictObject({
          bucket: z.string().default('stevedore'),
          /** Empty: AWS; else the gateway, such as http://rgw.internal:7480. */
          endpoint: z.union([z.literal(''), z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' })]).default(''),
          /** Empty: $AWS_REGION, else us-east-1. */
          region: z.string().default(''),
          forcePathStyle: z.boolean().default(false),
          /** Empty: the SDK's chain ($AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY, profiles, instance roles). */
          accessKeyId: z.string().default(''),
          secretAccessKey: z.string().default(''),
          prefix: z.string().regex(/^(?:[A-Za-z0-9._-]+\/)*$/, 'empty, or path segments each ending in /, such as mirrors/eu/').default(''),
          partSize: size('16MiB').refine((n) => n >= 5 * 1024 * 1024 && n <= 5 * 1024 ** 3, { message: 'between 5MiB and 5GiB (S3 part limits)' }),
          /** Answer blob GETs with a 307 to a presigned URL of the object. */
          redirect: z.boolean().default(false),
          redirectExpiry: duration('20m'),
          /** Where clients reach the gateway, for presigned URLs (split DNS); empty: endpoint. */
          publicEndpoint: z.union([z.literal(''), z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' })]).default(''),
          /** Every call to the gateway: until its answer, and the longest silence of a body. */
          requestTimeout: duration('30s'),
        })
        .prefault({}),
    })
    .prefault({}),
  warmup: z.array(warmupJobSchema).default([]),
  /** Several replicas on one bucket and one Redis; off unless `redis` is set. */
  cluster: z
    .strictObject({
      /** redis://[user:password@]host:port/db or rediss:// (TLS); empty: no cluster. */
      redis: z.union([z.literal(''), z.url({ protocol: /^rediss?$/, error: 'expected a redis:// or rediss:// URL' })]).default(''),
      /** Overrides the password of the redis URL (for a mounted secret: STEVEDORE_CLUSTER_REDISPASSWORD_FILE). */
      redisPassword: z.string().default(''),
      /** How the other replicas reach this one, such as http://10.0.0.5:5000. */
      advertise: z.union([z.literal(''), z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' })]).default(''),
      /** Shared secret of replica-to-replica requests. */
      secret: z.string().default(''),
      /** How long a fill's lease outlives a replica that stopped renewing it (died): then another takes over. */
      leaseTtl: duration('10s').refine((ms) => ms >= 1000 && ms <= 600_000, { message: 'between 1s and 10m' }),
    })
    .prefault({}),
  admin: z
    .strictObject({
      /** Bearer token for /api/; without one, only loopback clients may use it. */
      token: z.string().default(''),
      /** Host names (besides localhost and loopback addresses) the admin API and dashboard answer to. */
      hosts: z.array(z.string().regex(/^[A-Za-z0-9.-]+$|^\[[0-9a-fA-F:]+\]$/, 'a host name without port, such as stevedore.internal')).default([]),
      /** A listener of its own for /metrics, /healthz, /readyz, the admin API and the dashboard; empty: they share `listen`. */
      listen: z.union([z.literal(''), listenAddress]).default(''),
    })
    .prefault({}),
  /** Upstream health: active probes and the per-endpoint circuit breaker. */
  health: z
    .strictObject({
      probeInterval: duration('30s'),
      probeTimeout: duration('5s'),
      failureThreshold: z.number().int().min(1).default(3),
      openMin: duration('30s'),
      openMax: duration('10m'),
    })
    .prefault({}),
  /** Client authentication; off unless an htpasswd file is set. */
  auth: z
    .strictObject({
      htpasswd: z.string().default(''),
      realm: z.string().regex(/^[^"\\]*$/, 'no quotes or backslashes').default('Stevedore'),
      access: z.array(accessRuleSchema).default([]),
      /** Failed logins one client address may make per failedLoginWindow; beyond, it gets 429 until the window ends. 0: no limit. */
      maxFailedLogins: z.number().int().min(0).max(1_000_000).default(10),
      failedLoginWindow: duration('5m'),
    })
    .prefault({}),
  tls: z
    .strictObject({
      cert: z.string().default(''),
      key: z.string().default(''),
      /** An extra plain-HTTP listener (loopback, trusted networks) while `listen` serves HTTPS. */
      plainListen: z.union([z.literal(''), listenAddress]).default(''),
    })
    .prefault({})
    .refine((t) => (t.cert === '') === (t.key === ''), { message: 'set both cert and key, or neither' })
    .refine((t) => t.cert !== '' || t.plainListen === '', { message: 'plainListen only applies when cert and key are set' }),
  /**
   * Let a front server (nginx) send verified cached blobs with sendfile:
   * Stevedore answers with `header` naming the file under `prefix`.
   */
  offload: z
    .strictObject({
      header: z.enum(['', 'X-Accel-Redirect']).default(''),
      prefix: z.string().regex(/^\/[A-Za-z0-9._\/-]*\/$/, 'an absolute path ending in /, such as /_stevedore/').default('/_stevedore/'),
      minSize: size('1MiB'),
    })
    .prefault({}),
  /** Bounds on what clients may cost the server. */
  limits: z
    .strictObject({
      /** All request headers must arrive within this (slowloris). */
      headersTimeout: duration('20s'),
      /** The whole request must arrive within this; responses may take longer. */
      requestTimeout: duration('30s'),
      /** Idle keep-alive connections are closed after this. */
      keepAliveTimeout: duration('65s'),
      /** Open client connections; more get 429 TOOMANYREQUESTS and are closed. */
      maxConnections: z.number().int().min(1).max(1_000_000).default(2048),
      /** Open connections from one client address; more get 429 TOOMANYREQUESTS and are closed; 0: no limit. */
      maxConnectionsPerClient: z.number().int().min(0).max(1_000_000).default(256),
      /** A response that sends no byte for this long (a client that stopped reading) is cut. */
      sendTimeout: duration('60s'),
      /** A TLS handshake must complete within this. */
      handshakeTimeout: duration('10s'),
      /** Largest request header block. */
      maxHeaderSize: size('16KiB'),
      /** New blob fetches one client address may have queued or running at once (joining a running one is free); 0: no limit. */
      maxFillsPerClient: z.number().int().min(0).max(100_000).default(16),
      /** How long in-flight pulls may finish after SIGTERM before the process exits. */
      shutdownGrace: duration('30s'),
    })
    .prefault({}),
  /** Webhooks that are told what the mirror does (pulls, fills, failures, evictions), in distribution's format. */
  notifications: notificationsSchema,
  metrics: z
    .strictObject({
      /** Who may scrape /metrics: anyone (none), callers of the admin API (admin), or users of auth.htpasswd (client). */
      auth: z.enum(['none', 'admin', 'client']).default('none'),
    })
    .prefault({}),
  /** Append an audit line per pull (who, what, when) to this file; empty: off. */
  auditLog: z.string().default(''),
  /** A Docker config.json whose `auths` supply credentials for endpoints that set none. */
  dockerConfig: z.string().default(''),
  /** This instance's name in the loop-detection chain between mirrors; empty: a random id kept in the cache dir. */
  instanceId: z.string().regex(/^[A-Za-z0-9._-]*$/, 'letters, digits, dot, dash and underscore only').default(''),
  upstreams: z
    .array(upstreamSchema)
    .min(1, 'configure at least one upstream')
    .default(() => DEFAULT_UPSTREAMS.map((u) => upstreamSchema.parse(u))),
});

export const configSchema = baseSchema.superRefine(crossChecks);

export type Config = z.output<typeof configSchema>;

/** Rules across keys, each naming the key it is about. */
function crossChecks(config: z.output<typeof baseSchema>, ctx: z.RefinementCtx): void {
  if (config.storage.driver === 's3' && (config.storage.s3.accessKeyId === '') !== (config.storage.s3.secretAccessKey === '')) {
    ctx.addIssue({ code: 'custom', path: ['storage', 's3', 'secretAccessKey'], message: 'set both accessKeyId and secretAccessKey, or neither (the SDK then finds credentials itself)' });
  }
  if (config.storage.s3.redirect && config.storage.driver !== 's3') {
    ctx.addIssue({ code: 'custom', path: ['storage', 's3', 'redirect'], message: 'redirects need storage.driver: s3' });
  }
  if (config.storage.driver === 's3' && config.offload.header !== '') {
    ctx.addIssue({ code: 'custom', path: ['offload', 'header'], message: 'offload sends local files; with storage.driver: s3 use storage.s3.redirect' });
  }
  if (config.cluster.redis !== '') {
    if (config.storage.driver !== 's3') ctx.addIssue({ code: 'custom', path: ['cluster', 'redis'], message: 'a cluster shares one bucket: it needs storage.driver: s3' });
    if (config.cluster.advertise === '') ctx.addIssue({ code: 'custom', path: ['cluster', 'advertise'], message: 'set how the other replicas reach this one, such as http://10.0.0.5:5000' });
    if (config.cluster.secret.length < 16) ctx.addIssue({ code: 'custom', path: ['cluster', 'secret'], message: 'set a shared secret of at least 16 characters for replica-to-replica requests' });
  }
  const seen = new Map<string, number>();
  config.upstreams.forEach((upstream, index) => {
    for (const name of [upstream.registry, ...upstream.aliases]) {
      const first = seen.get(name);
      if (first !== undefined && first !== index) ctx.addIssue({ code: 'custom', path: ['upstreams', index, 'registry'], message: `"${name}" is already configured by upstreams[${first}]: one entry per registry` });
      seen.set(name, index);
    }
  });
  if (!seen.has(config.defaultRegistry)) {
    ctx.addIssue({ code: 'custom', path: ['defaultRegistry'], message: `"${config.defaultRegistry}" is not a configured upstream (${[...seen.keys()].join(', ')}): every pull without a registry would fail` });
  }
  if (config.offload.header !== '' && !isLoopbackListen(config.listen)) {
    ctx.addIssue({ code: 'custom', path: ['offload', 'header'], message: `offload needs listen on a loopback address behind nginx (listen is ${config.listen}): a client reaching Stevedore directly would get empty blob bodies` });
  }
  if (config.metrics.auth === 'client' && config.auth.htpasswd === '') {
    ctx.addIssue({ code: 'custom', path: ['metrics', 'auth'], message: '"client" needs auth.htpasswd: there are no users to check' });
  }
}
export type UpstreamConfig = Config['upstreams'][number];
export type EndpointConfig = UpstreamConfig['endpoints'][number];
export type WarmupJobConfig = Config['warmup'][number];

function isLoopbackListen(listen: string): boolean {
  const host = listen.slice(0, listen.lastIndexOf(':')).replace(/^\[(.*)\]$/, '$1');
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
