// Kills the real docker-registry behind a RegistryHandle by its PID (SIGKILL)
// and starts it again on the same port with the same storage, so tests can
// take the upstream away in the middle of transfers and bring it back.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import type { RegistryHandle } from './registry.js';

export interface RestartableRegistry {
  readonly url: string;
  /** PID of the docker-registry serving now. */
  readonly pid: number;
  /** SIGKILL by PID, then waits until the port refuses connections. */
  kill(): Promise<void>;
  /** Starts docker-registry again with the same config file: same port, same storage. */
  restart(): Promise<void>;
  /** Stops the restarted process, if any, then the original handle (which removes the storage). */
  stop(): Promise<void>;
}

function refuses(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

async function waitReady(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`restarted docker-registry exited (${child.exitCode ?? child.signalCode})`);
    try {
      const res = await request(`${url}/v2/`, { headersTimeout: 1000, bodyTimeout: 1000 });
      await res.body.dump();
      if (res.statusCode === 200) return;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  throw new Error(`restarted docker-registry at ${url} not ready within ${timeoutMs} ms`);
}

export function restartable(handle: RegistryHandle): RestartableRegistry {
  const binary = process.env['STEVEDORE_REGISTRY_BIN'] ?? 'docker-registry';
  let pid = handle.pid;
  let current: ChildProcess | undefined;
  const exitOf = (child: ChildProcess): Promise<void> =>
    child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', () => resolve()));
  return {
    url: handle.url,
    get pid() {
      return pid;
    },
    async kill() {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        return; // already gone
      }
      if (current) await exitOf(current);
      for (let i = 0; i < 100 && !(await refuses(handle.port)); i++) await sleep(50);
    },
    async restart() {
      const log = openSync(handle.logFile, 'a');
      const child = spawn(binary, ['serve', join(handle.dir, 'config.yml')], { stdio: ['ignore', log, log] });
      closeSync(log);
      current = child;
      if (child.pid === undefined) throw new Error('docker-registry did not start again');
      pid = child.pid;
      await waitReady(handle.url, child, 15_000);
    },
    async stop() {
      if (current && current.exitCode === null && current.signalCode === null) {
        process.kill(pid, 'SIGTERM');
        const timer = setTimeout(() => current?.exitCode === null && process.kill(pid, 'SIGKILL'), 5_000);
        await exitOf(current);
        clearTimeout(timer);
      }
      await handle.stop();
    },
  };
}
