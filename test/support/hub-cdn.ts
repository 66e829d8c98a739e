// The "CDN" behind the Docker Hub double: blob GETs are redirected here with a
// signed URL on a different host string (localhost), like Hub → Cloudflare.
// It needs no auth and counts any Authorization header that leaks to it.
import { createHmac, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { closeServer, listen, trackSockets } from './hub-http.js';

export interface CdnServer {
  port: number;
  /** Base URL using `localhost`, deliberately not 127.0.0.1. */
  url: string;
  signedUrl(repo: string, digest: string, ttlSeconds?: number): string;
  /** Checks the signature; returns the blob coordinates or undefined. */
  verify(url: URL): { repo: string; digest: string } | undefined;
  close(): Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

export async function startCdn(handler: Handler): Promise<CdnServer> {
  const key = randomBytes(16);
  const v4 = createServer(handler);
  const v4Sockets = trackSockets(v4);
  const port = await listen(v4, 0, '127.0.0.1');
  // `localhost` may resolve to ::1 first; serve there too when the host has IPv6.
  const v6 = createServer(handler);
  const v6Sockets = trackSockets(v6);
  await listen(v6, port, '::1').catch(() => undefined);
  const url = `http://localhost:${port}`;

  const sign = (path: string, expires: number): string =>
    createHmac('sha256', key).update(`${path}\n${expires}`).digest('base64url');

  return {
    port,
    url,
    signedUrl(repo, digest, ttlSeconds = 600): string {
      const path = `/cdn/${repo}/blobs/${digest}`;
      const expires = Math.floor(Date.now() / 1000) + ttlSeconds;
      return `${url}${path}?expires=${expires}&signature=${sign(path, expires)}`;
    },
    verify(u): { repo: string; digest: string } | undefined {
      const m = /^\/cdn\/(.+)\/blobs\/(sha256:[a-f0-9]{64})$/.exec(u.pathname);
      const expires = Number(u.searchParams.get('expires'));
      const sig = u.searchParams.get('signature');
      if (!m?.[1] || !m[2] || !sig || !Number.isFinite(expires)) return undefined;
      if (expires * 1000 < Date.now() || sig !== sign(u.pathname, expires)) return undefined;
      return { repo: m[1], digest: m[2] };
    },
    async close(): Promise<void> {
      await Promise.all([closeServer(v4, v4Sockets), closeServer(v6, v6Sockets)]);
    },
  };
}
