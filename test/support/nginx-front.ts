// nginx in front of Stevedore, sending verified cached blobs with sendfile
// (X-Accel-Redirect), as docs/nginx-offload.conf shows. Stopped by its PID.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { freePort } from './registry.js';

const template = fileURLToPath(new URL('../../docs/nginx-offload.conf', import.meta.url));

export interface NginxFront {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** Runs nginx (as root, so workers can read a private temp cache) with the documented server block. */
export async function startNginxFront(mirrorUrl: string, cacheDir: string, workers = 2): Promise<NginxFront> {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-nginx-'));
  const port = await freePort();
  const server = readFileSync(template, 'utf8')
    .replaceAll('listen 5443 ssl;', `listen 127.0.0.1:${port};`)
    .replace(/^\s*ssl_certificate.*$/gm, '')
    .replaceAll('http://127.0.0.1:5000', mirrorUrl)
    .replaceAll('/var/lib/stevedore', cacheDir);
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `  ${k}_temp_path ${dir}/${k};`).join('\n');
  writeFileSync(
    join(dir, 'nginx.conf'),
    `user root;\nworker_processes ${workers};\ndaemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents { worker_connections 1024; }\nhttp {\n  access_log off;\n${temp}\n${server}\n}\n`,
  );
  const child = spawn('nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const url = `http://127.0.0.1:${port}`;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) break;
    try {
      const res = await request(`${url}/v2/`);
      await res.body.dump();
      if (res.statusCode < 500) return { url, pid: child.pid!, stop };
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await stop();
  throw new Error(`nginx did not start: ${stderr}`);
}
