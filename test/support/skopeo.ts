// Runs skopeo against loopback registries, with no policy or registries.conf surprises.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function skopeo(args: string[], timeoutMs = 120_000): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile('skopeo', ['--insecure-policy', ...args], { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, HTTPS_PROXY: '', HTTP_PROXY: '' } }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

export function sha256File(path: string): string {
  return `sha256:${createHash('sha256').update(readFileSync(path)).digest('hex')}`;
}

/** What a `dir:` copy holds: the manifest's digest and every blob file's verified digest. */
export function readDirCopy(dir: string): { manifestDigest: string; manifest: Buffer; blobs: string[] } {
  const manifest = readFileSync(join(dir, 'manifest.json'));
  const blobs = readdirSync(dir)
    .filter((name) => /^[a-f0-9]{64}$/.test(name))
    .map((name) => {
      const digest = sha256File(join(dir, name));
      if (digest !== `sha256:${name}`) throw new Error(`blob file ${name} does not match its digest (${digest})`);
      return digest;
    });
  return { manifestDigest: `sha256:${createHash('sha256').update(manifest).digest('hex')}`, manifest, blobs };
}
