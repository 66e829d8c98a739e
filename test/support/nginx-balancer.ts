// nginx as a round-robin load balancer in front of several Stevedore
// replicas, passing bodies through unbuffered and retrying the next replica
// when one is down. All state in a temp dir, stopped by its PID.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { acceptsConnections } from './wait.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './registry.js';
import { onPath } from './requirements.js';

export interface Balancer {
  /** http://127.0.0.1:<port> */
  url: string;
  port: number;
  pid: number;
  /** SIGTERM (SIGKILL after 5 s), then removes the dir. Idempotent. */
  stop(): Promise<void>;
}

/** Why nginx cannot run here, or undefined. */
export async function balancerUnavailableReason(): Promise<string | undefined> {
  const binary = await onPath(['nginx']);
  if (!binary) return 'nginx not installed (apt-get install nginx-light)';
  const probe = spawnSync(binary, ['-v'], { encoding: 'utf8', timeout: 10_000 });
  return probe.status === 0 ? undefined : `nginx -v failed (${probe.status}): ${probe.stderr || probe.error?.message}`;
}

function hostPort(backend: string): string {
  const u = new URL(backend);
  if (u.protocol !== 'http:' || !u.port) throw new Error(`backend must be http://host:port, got ${backend}`);
  return `${u.hostname}:${u.port}`;
}

function config(dir: string, port: number, backends: readonly string[], workers: number): string {
  const servers = backends.map((b) => `    server ${hostPort(b)} max_fails=1 fail_timeout=2s;`).join('\n');
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `  ${k}_temp_path ${dir}/${k};`).join('\n');
  // Workers must be able to read the temp paths nginx creates as the master's user.
  const user = process.getuid?.() === 0 ? 'user root;\n' : '';
  return `${user}worker_processes ${workers};
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 1024; }
http {
  access_log off;
${temp}
  upstream stevedore {
${servers}
    # Shared by all workers, so the rotation and the failure counts are one, not one per worker.
    zone stevedore 64k;
    keepalive 32;
  }
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 0;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_read_timeout 300s;
    proxy_send_timeout 300s;
    proxy_connect_timeout 2s;
    proxy_next_upstream error timeout http_502 http_503;
    proxy_next_upstream_tries 3;
    location / { proxy_pass http://stevedore; }
  }
}
`;
}


/**
 * Starts nginx balancing over `backends` (http://127.0.0.1:PORT each). Ready
 * once its socket accepts, so it may start before any backend answers.
 */
export async function startBalancer(backends: string[], options: { workers?: number } = {}): Promise<Balancer> {
  if (backends.length === 0) throw new Error('startBalancer needs at least one backend');
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-balancer-'));
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, config(dir, port, backends, options.workers ?? 2));
  // -e: the error log before the config is read, so nothing is written under /var/log.
  const child = spawn('nginx', ['-c', conf, '-p', dir, '-e', join(dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  let spawnError: Error | undefined;
  let gone = false;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (err) => {
      spawnError = err;
      resolve();
    });
  });
  void exited.then(() => (gone = true));
  const running = (): boolean => !gone && child.exitCode === null && child.signalCode === null;
  const stop = async (): Promise<void> => {
    if (running() && child.pid !== undefined) {
      const pid = child.pid;
      process.kill(pid, 'SIGTERM');
      const timer = setTimeout(() => running() && process.kill(pid, 'SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 100 && running(); i++) {
    if (await acceptsConnections(port)) return { url: `http://127.0.0.1:${port}`, port, pid: child.pid!, stop };
    await Promise.race([new Promise((r) => setTimeout(r, 50)), exited]);
  }
  const why = gone ? `exited (${spawnError?.message ?? child.exitCode ?? child.signalCode})` : 'did not listen within 5 s';
  let log = '';
  try {
    log = readFileSync(join(dir, 'error.log'), 'utf8').slice(-3000);
  } catch {
    // no log written
  }
  await stop();
  throw new Error(`nginx balancer ${why}: ${stderr}\n${log}`);
}
