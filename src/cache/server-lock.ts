import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface ServerInfo {
  pid: number;
  /** Where the running server answers, for command-line tools to use its API. */
  url: string;
}

const FILE = 'server.json';

/** Records that a server owns this cache directory; returns a release function. */
export function claimCacheDir(dir: string, info: ServerInfo): () => void {
  const existing = runningServer(dir);
  if (existing && existing.pid !== process.pid) {
    throw new Error(`cache directory ${dir} is already served by process ${existing.pid} (${existing.url})`);
  }
  const path = join(dir, FILE);
  writeFileSync(path, JSON.stringify(info));
  return () => {
    if (runningServer(dir)?.pid === process.pid) rmSync(path, { force: true });
  };
}

/** The server that owns `dir`, if it is still alive. */
export function runningServer(dir: string): ServerInfo | undefined {
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
