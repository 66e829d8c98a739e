import Koa from 'koa';
import Router from '@koa/router';
import type { Logger } from '../log.js';
import type { Mirror } from '../mirror/mirror.js';
import { routeUnknown } from '../oci/errors.js';
import { errorHandler } from './error-handler.js';
import { requestLog } from './request-log.js';
import { adminRoutes, type AdminDeps } from './admin-routes.js';
import { v2Routes } from './v2-routes.js';

export interface AppDeps {
  core: AdminDeps & { mirror: Mirror; instanceId: string };
  log: Logger;
  /** Bearer token for /api/; empty: loopback clients only. */
  adminToken: string;
}

export function createApp({ core, log, adminToken }: AppDeps): Koa {
  const { mirror, instanceId } = core;
  const app = new Koa();
  app.silent = true; // errors are logged by our own middleware
  const v2 = v2Routes(mirror, instanceId);
  const ops = new Router();
  ops.get('/healthz', (ctx) => {
    ctx.body = { status: 'ok', fillsInProgress: mirror.fills.inProgress };
  });
  app.use(requestLog(log));
  app.use(errorHandler(log));
  app.use(ops.routes());
  app.use(adminRoutes(core, adminToken).routes());
  app.use(v2.routes());
  app.use((ctx) => {
    throw routeUnknown(ctx.path);
  });
  return app;
}
