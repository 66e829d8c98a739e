import Koa from 'koa';
import Router from '@koa/router';
import type { Cluster } from '../cluster/cluster.js';
import type { Readiness } from '../jobs/readiness.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Mirror } from '../mirror/mirror.js';
import { routeUnknown } from '../oci/errors.js';
import { AdminHosts } from './admin-hosts.js';
import { adminCheck, adminRoutes, type AdminDeps } from './admin-routes.js';
import { AccessRules, basicLogin, clientAuth, type AccessRule } from './client-auth.js';
import type { HtpasswdVerifier } from './htpasswd.js';
import { errorHandler } from './error-handler.js';
import { peerRoutes } from './peer-routes.js';
import { requestLog, type PullRecorder } from './request-log.js';
import { uiRoutes } from './ui-routes.js';
import { v2Routes, type Offload } from './v2-routes.js';

export interface AppDeps {
  core: AdminDeps & { mirror: Mirror; instanceId: string; metrics: Metrics; cluster: Cluster; readiness: Pick<Readiness, 'check'>; notifications: PullRecorder };
  log: Logger;
  /** Bearer token for /api/; empty: loopback clients only. */
  adminToken: string;
  /** Host names besides loopback ones the admin API and dashboard answer to. */
  adminHosts: readonly string[];
  /** Where audit lines of pulls go, when enabled. */
  audit?: Logger;
  /** Blob hits sent by a front server, when configured. */
  offload?: Offload;
  /** Blob GETs of verified objects answered with a 307 to a presigned URL of the store. */
  redirect?: boolean;
  /** Client authentication on /v2, when configured. */
  auth?: { verifier: HtpasswdVerifier; realm: string; access: readonly AccessRule[] };
  /** Who may scrape /metrics: anyone, the admin API's callers, or users who may pull. */
  metricsAuth: 'none' | 'admin' | 'client';
  /** Take the client's address, scheme and host from X-Forwarded-For, -Proto and -Host (config trustProxy). */
  trustProxy: boolean;
  /**
   * Which routes this app serves: all of them, the registry's alone (`public`), or
   * /metrics, /healthz, /readyz, the admin API and the dashboard alone (`admin`), for
   * admin.listen. Either way, the paths it does not serve answer the registry's JSON 404.
   */
  serves?: 'all' | 'public' | 'admin';
}

export function createApp({ core, log, adminToken, adminHosts, audit, auth, offload, redirect, metricsAuth, trustProxy, serves = 'all' }: AppDeps): Koa {
  const { mirror, instanceId, metrics } = core;
  const app = new Koa();
  app.silent = true; // errors are logged by our own middleware
  app.proxy = trustProxy;
  // ctx.ip is the last X-Forwarded-For entry, the one the trusted proxy appended (its TCP peer):
  // the entries before it are whatever the client sent, and anyone may claim any address there.
  app.maxIpsCount = 1;
  const rules = auth ? new AccessRules(auth.access) : undefined;
  const v2 = v2Routes(mirror, instanceId, rules ? (user, target) => rules.check(user ?? '', target) : undefined, offload, redirect);
  const ops = new Router();
  // Liveness: the process answers. Readiness: it can serve pulls now (503 names the failing checks).
  ops.get('/healthz', (ctx) => {
    ctx.body = { status: 'ok', fillsInProgress: mirror.fills.inProgress };
  });
  ops.get('/readyz', async (ctx) => {
    const report = await core.readiness.check();
    ctx.status = report.failing.length === 0 ? 200 : 503;
    ctx.set('cache-control', 'no-store');
    ctx.body = report;
  });
  const scrapeCheck = metricsAuth === 'admin' ? adminCheck(adminToken) : metricsAuth === 'client' && auth ? basicLogin(auth.verifier, auth.realm) : undefined;
  ops.get('/metrics', async (ctx) => {
    await scrapeCheck?.(ctx);
    ctx.type = metrics.registry.contentType;
    ctx.body = await metrics.scrape();
  });
  app.use(requestLog(log, metrics, audit, core.notifications));
  app.use(errorHandler(log));
  if (serves !== 'admin') {
    // Replicas authenticate with the cluster secret, not as clients.
    app.use(peerRoutes(mirror, core.cluster.peerSecret).routes());
    if (auth) app.use(clientAuth(auth.verifier, auth.realm));
    // The registry API is the hot path: it goes first, so its requests never pass the other routers.
    app.use(v2.routes());
  }
  if (serves !== 'public') {
    app.use(ops.routes());
    const hosts = new AdminHosts(adminHosts, adminToken !== '');
    app.use(uiRoutes(hosts).routes());
    app.use(adminRoutes(core, adminToken, hosts).routes());
  }
  app.use((ctx) => {
    throw routeUnknown(ctx.path);
  });
  return app;
}
