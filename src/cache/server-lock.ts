import { closeSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export interface ServerInfo {
  pid: number;
  /** Where the owning server answers, for command-line tools to use its API; empty for a CLI owner. */
  url: string;
}

const FILE = 'server.json';

/**
 * Claims the cache directory for this process, atomically (O_EXCL): one owner
 * at a time sweeps temp files and runs fills. A claim left by a dead process is taken over.
 */
export function claimCacheDir(dir: string, info: ServerInfo): () => void {
  const path = join(dir, FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      try {
        writeSync(fd, JSON.stringify(info));
      } finally {
        closeSync(fd);
      }
      return () => {
        if (owner(dir)?.pid === process.pid) rmSync(path, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const current = owner(dir);
      if (current && current.pid !== process.pid) {
        throw new Error(`cache directory ${dir} is in use by process ${current.pid}${current.url ? ` (${current.url})` : ''}`);
      }
      rmSync(path, { force: true }); // stale: its process is gone
    }
  }
  throw new Error(`cannot claim cache directory ${dir}`);
}

/** Records where the owning server listens, once it does. */
export function announceServer(dir: string, info: ServerInfo): void {
  writeFileSync(join(dir, FILE), JSON.stringify(info));
}

/** The live process that owns `dir`, if any. */
export function owner(dir: string): ServerInfo | undefined {
  let info: ServerInfo;
  try {
    info = JSON.parse(readFileSync(join(dir, FILE), 'utf8')) as ServerInfo;
  } catch {
    return undefined;
  }
  try {
    process.kill(info.pid, 0);
    return info;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? info : undefined;
  }
}

/** The server (with an API) that owns `dir`, if one runs. */
export function runningServer(dir: string): ServerInfo | undefined {
  const info = owner(dir);
  return info?.url ? info : undefined;
}
