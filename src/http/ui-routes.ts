import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Router from '@koa/router';
import type { AdminHosts } from './admin-hosts.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

/** The dashboard: a few static files, loaded once, plus the chart library vendored from npm. */
export function uiRoutes(hosts: AdminHosts): Router {
  const here = dirname(fileURLToPath(import.meta.url));
  const uiDir = join(here, '..', 'ui');
  const files = new Map<string, Buffer>();
  for (const name of readdirSync(uiDir)) {
    if (TYPES[extname(name)]) files.set(name, readFileSync(join(uiDir, name)));
  }
  const require = createRequire(import.meta.url);
  files.set('vendor-uplot.js', readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js')));
  files.set('vendor-uplot.css', readFileSync(require.resolve('uplot/dist/uPlot.min.css')));

  const router = new Router();
  router.use(hosts.guard());
  router.get('/', (ctx) => ctx.redirect('/ui/'));
  router.get(['/ui/', '/ui/:file'], async (ctx, next) => {
    const name = ctx.params.file ?? 'index.html';
    const body = files.get(name);
    if (!body) return next(); // on to the JSON 404
    ctx.type = TYPES[extname(name)] ?? 'application/octet-stream';
    ctx.set('Cache-Control', 'no-cache');
    ctx.set('Content-Security-Policy', "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:");
    ctx.body = body;
  });
  return router;
}
