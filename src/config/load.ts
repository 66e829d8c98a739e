import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { credentialsFor, loadDockerAuths } from './docker-config.js';
import { ConfigError } from './errors.js';
import { configSchema, DEFAULT_UPSTREAMS, type Config } from './schema.js';

export { ConfigError };

export interface LoadOptions {
  /** An explicit config file; else STEVEDORE_CONFIG, else ./mirror.yml when present. */
  file?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

const ENV_PREFIX = 'STEVEDORE_';

/** Reads mirror.yml (or nothing), applies STEVEDORE_* overrides, validates, and resolves paths. */
export function loadConfig(options: LoadOptions = {}): Config & { source: string } {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const file = options.file ?? env.STEVEDORE_CONFIG ?? (existsSync(resolve(cwd, 'mirror.yml')) ? 'mirror.yml' : undefined);
  let raw: unknown = {};
  if (file) {
    const path = resolve(cwd, file);
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
    }
    try {
      raw = parseYaml(text) ?? {};
    } catch (err) {
      throw new ConfigError(`config file ${file} is not valid YAML: ${(err as Error).message}`);
    }
    if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(`config file ${file} must hold a mapping`);
  }
  const merged = applyEnvOverrides(raw as Record<string, unknown>, env);
  const config = validateConfig(merged);
  readSecretFiles(config, cwd);
  if (config.dockerConfig) applyDockerConfig(config, resolve(cwd, config.dockerConfig));
  config.cache.dir = resolve(cwd, config.cache.dir);
  if (config.auditLog) config.auditLog = resolve(cwd, config.auditLog);
  if (config.auth.htpasswd) config.auth.htpasswd = resolve(cwd, config.auth.htpasswd);
  if (config.tls.cert) config.tls.cert = resolve(cwd, config.tls.cert);
  if (config.tls.key) config.tls.key = resolve(cwd, config.tls.key);
  return { ...config, source: file ?? '(embedded defaults)' };
}

export function validateConfig(raw: unknown): Config {
  const result = configSchema.safeParse(raw);
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => {
    const base = issue.path.join('.');
    if (issue.code === 'unrecognized_keys') {
      const keys = issue.keys.map((k) => (base ? `${base}.${k}` : k));
      return `unknown config key ${keys.map((k) => `"${k}"`).join(', ')}`;
    }
    return `invalid config key "${base || '(root)'}": ${issue.message}`;
  });
  throw new ConfigError(lines.join('\n'));
}

function readSecretFiles(config: Config, cwd: string): void {
  config.notifications.endpoints.forEach((endpoint, e) => {
    if (endpoint.secretFile) {
      endpoint.secret = readSecret(resolve(cwd, endpoint.secretFile), `notifications.endpoints.${e}.secretFile`);
      // An empty file would turn signing off without a word.
      if (endpoint.secret === '') throw new ConfigError(`invalid config key "notifications.endpoints.${e}.secretFile": the file is empty`);
    }
    for (const [name, file] of Object.entries(endpoint.headerFiles)) {
      const value = readSecret(resolve(cwd, file), `notifications.endpoints.${e}.headerFiles.${name}`);
      if (/[\r\n\0]/.test(value)) throw new ConfigError(`invalid config key "notifications.endpoints.${e}.headerFiles.${name}": the file holds CR, LF or NUL inside its value`);
      endpoint.headers[name] = value;
    }
  });
  config.upstreams.forEach((upstream, u) =>
    upstream.endpoints.forEach((endpoint, e) => {
      if (!endpoint.passwordFile) return;
      endpoint.password = readSecret(resolve(cwd, endpoint.passwordFile), `upstreams.${u}.endpoints.${e}.passwordFile`);
    }),
  );
}

function readSecret(path: string, key: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new ConfigError(`invalid config key "${key}": cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** Endpoints without credentials of their own take them from a Docker config.json. */
function applyDockerConfig(config: Config, path: string): void {
  const auths = loadDockerAuths(path);
  for (const upstream of config.upstreams) {
    for (const endpoint of upstream.endpoints) {
      if (endpoint.username || endpoint.mirror) continue;
      const found = credentialsFor(auths, endpoint.url);
      if (found) Object.assign(endpoint, found);
    }
  }
}

/**
 * STEVEDORE_ plus the key path in upper snake case overrides a key:
 * STEVEDORE_CACHE_TAGTTL=5m, STEVEDORE_UPSTREAMS_0_ENDPOINTS_0_PASSWORD=…
 * A _FILE suffix reads the value from a file (for mounted secrets).
 */
export function applyEnvOverrides(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): Record<string, unknown> {
  const result = structuredClone(raw);
  // Credentials for the default Docker Hub upstream may come from env alone.
  if (result.upstreams === undefined) result.upstreams = structuredClone(DEFAULT_UPSTREAMS);
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || value === undefined || name === 'STEVEDORE_CONFIG') continue;
    let segments = name.slice(ENV_PREFIX.length).split('_').filter(Boolean);
    let text = value;
    if (segments.at(-1) === 'FILE' && segments.length > 1 && !endsAtKey(segments)) {
      segments = segments.slice(0, -1);
      try {
        text = readFileSync(value, 'utf8').trim();
      } catch (err) {
        throw new ConfigError(`cannot read ${name}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
      }
    }
    setByEnvPath(result, segments, text, name);
  }
  return result;
}

/** Whether the segments (ending in FILE) already name a real key, like passwordFile. */
function endsAtKey(segments: string[]): boolean {
  return resolveSchemaPath(segments) !== undefined;
}

type Node = z.ZodType;

function unwrap(schema: Node): Node {
  let current: Node = schema;
  for (let depth = 0; depth < 10; depth++) {
    if (current instanceof z.ZodDefault || current instanceof z.ZodOptional || current instanceof z.ZodPrefault) {
      current = current.unwrap() as Node;
    } else if (current instanceof z.ZodPipe) {
      current = current.in as Node;
    } else break;
  }
  return current;
}

/** Maps upper-snake segments onto real keys, walking the schema; undefined when no key fits. */
function resolveSchemaPath(segments: string[]): { keys: (string | number)[]; leaf: Node } | undefined {
  let node: Node = configSchema;
  const keys: (string | number)[] = [];
  for (const segment of segments) {
    const current = unwrap(node);
    if (current instanceof z.ZodObject) {
      const key = Object.keys(current.shape).find((k) => k.toUpperCase() === segment);
      if (!key) return undefined;
      keys.push(key);
      node = current.shape[key] as Node;
    } else if (current instanceof z.ZodArray && /^\d+$/.test(segment)) {
      keys.push(Number(segment));
      node = current.element as Node;
    } else return undefined;
  }
  return { keys, leaf: unwrap(node) };
}

function setByEnvPath(target: Record<string, unknown>, segments: string[], text: string, envName: string): void {
  const resolved = resolveSchemaPath(segments);
  if (!resolved || resolved.keys.length === 0) throw new ConfigError(`environment variable ${envName} names no config key`);
  let value: unknown = text;
  if (resolved.leaf instanceof z.ZodNumber) value = Number(text);
  else if (resolved.leaf instanceof z.ZodBoolean) value = text === 'true' || text === '1';
  else if (resolved.leaf instanceof z.ZodArray) value = text.split(',').map((s) => s.trim()).filter(Boolean);
  let cursor: Record<string | number, unknown> = target;
  resolved.keys.forEach((key, i) => {
    if (i === resolved.keys.length - 1) {
      cursor[key] = value;
      return;
    }
    const next = cursor[key];
    if (typeof next !== 'object' || next === null) {
      cursor[key] = typeof resolved.keys[i + 1] === 'number' ? [] : {};
    }
    cursor = cursor[key] as Record<string | number, unknown>;
  });
}
