import { readFileSync } from 'node:fs';
import { ConfigError } from './errors.js';

export interface DockerCredentials {
  username: string;
  password: string;
}

const HUB_HOSTS = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);
const HUB_KEY = 'https://index.docker.io/v1/';

/** The `auths` of a Docker config.json, keyed by registry host. */
export function loadDockerAuths(path: string): Map<string, DockerCredentials> {
  let parsed: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8')) as typeof parsed;
  } catch (err) {
    throw new ConfigError(`invalid config key "dockerConfig": cannot read ${path} as JSON (${(err as NodeJS.ErrnoException).code ?? 'parse error'})`);
  }
  const result = new Map<string, DockerCredentials>();
  for (const [key, entry] of Object.entries(parsed.auths ?? {})) {
    let { username, password } = entry;
    if (entry.auth) {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon > 0) {
        username = decoded.slice(0, colon);
        password = decoded.slice(colon + 1);
      }
    }
    if (username && password !== undefined) result.set(hostOf(key), { username, password });
  }
  return result;
}

/** Credentials for an endpoint URL, with Docker Hub's historical key understood. */
export function credentialsFor(auths: Map<string, DockerCredentials>, endpointUrl: string): DockerCredentials | undefined {
  const host = new URL(endpointUrl).host;
  if (HUB_HOSTS.has(host)) {
    for (const candidate of [hostOf(HUB_KEY), ...HUB_HOSTS]) {
      const found = auths.get(candidate);
      if (found) return found;
    }
  }
  return auths.get(host);
}

function hostOf(key: string): string {
  try {
    return key.includes('://') ? new URL(key).host : key.split('/', 1)[0]!;
  } catch {
    return key;
  }
}
