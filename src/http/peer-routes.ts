import Router from '@koa/router';
import type { Context } from 'koa';
import { hasPeerSecret, PEER_BLOB_PATH } from '../cluster/peer-client.js';
import type { Mirror } from '../mirror/mirror.js';
import { parseDigest } from '../oci/digest.js';
import { blobUnknown, digestInvalid, unauthorized } from '../oci/errors.js';
import { requestedRange } from './range.js';

/**
 * The endpoint other replicas stream blobs from: the fill running here, bytes
 * as they arrive, or the cached copy. Blobs by digest only, never paths, and
 * only for requests that carry the cluster's secret. Without a cluster
 * (`secret` empty) it does not exist.
 */
export function peerRoutes(mirror: Mirror, secret: string): Router {
  const router = new Router();
  if (!secret) return router;
  const serve = async (ctx: Context, head: boolean): Promise<void> => {
    if (!hasPeerSecret(ctx.get('Authorization') || undefined, secret)) throw unauthorized('replica-to-replica requests need the cluster secret');
    const reference = ctx.params['digest'] ?? '';
    try {
      parseDigest(reference);
    } catch (err) {
      throw digestInvalid((err as Error).message);
    }
    // Ends (and lets a queued fill go) when the asking replica goes away.
    const gone = new AbortController();
    ctx.req.once('close', () => gone.abort());
    const blob = await mirror.peerBlob(reference, gone.signal);
    if (!blob) throw blobUnknown(reference);
    const range = requestedRange(ctx.get('Range') || undefined, blob.size);
    ctx.status = range ? 206 : 200;
    if (!head) ctx.body = await blob.open(range);
    ctx.set({ 'Content-Type': 'application/octet-stream', 'Content-Length': String(range ? range.end - range.start + 1 : blob.size), 'Docker-Content-Digest': reference });
    if (range) ctx.set('Content-Range', `bytes ${range.start}-${range.end}/${blob.size}`);
  };
  router.get(`${PEER_BLOB_PATH}:digest`, (ctx) => serve(ctx, false));
  router.head(`${PEER_BLOB_PATH}:digest`, (ctx) => serve(ctx, true));
  return router;
}
