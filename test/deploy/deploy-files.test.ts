// The deployment examples of docs/deploy/: every YAML file parses, the pieces
// fit together (names, labels, ports, probe paths, mounts), and the Stevedore
// config each one runs loads through the real loadConfig with the environment
// its compose service or Deployment sets. nginx checks nginx.conf when present.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';
import { request } from 'undici';
import { loadConfig } from '../../src/config/load.js';
import { onPath, requirement } from '../support/requirements.js';
import { SERVE_NODE_FLAGS, startMirror } from '../support/stevedore.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const deployDir = join(repoRoot, 'docs/deploy');
const k8sDir = join(deployDir, 'kubernetes');
/** What a user would put in docs/deploy/.env. */
const composeVars: Record<string, string> = { STEVEDORE_CLUSTER_SECRET: 'c'.repeat(64), MINIO_ROOT_PASSWORD: 'minio-password-0123' };
const SAMPLE_POD_IP = '10.1.2.3';

type Env = Record<string, string>;
type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : {});
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string => (typeof v === 'string' || typeof v === 'number' ? String(v) : '');

function scratch(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'stevedore-deploy-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The ENV of the Dockerfile's runtime stage (the last FROM), and its WORKDIR-independent facts. */
function imageEnv(): Env {
  const text = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const runtime = text.slice(text.lastIndexOf('\nFROM '));
  const env: Env = {};
  for (const line of runtime.split('\n').filter((l) => /^ENV\s/.test(l))) {
    for (const [, key, value] of line.matchAll(/([A-Z_][A-Z0-9_]*)=(\S+)/g)) env[key!] = value!;
  }
  return env;
}

/** Compose's interpolation of one value: $$, ${NAME}, ${NAME:-default}, ${NAME:?error}. */
function interpolate(value: string, vars: Env): string {
  return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}/g, (whole, name?: string, op?: string, arg?: string) => {
    if (whole === '$$') return '$';
    const set = vars[name!];
    if (set !== undefined && set !== '') return set;
    if (op?.endsWith('?')) throw new Error(`compose would refuse to start: ${arg}`);
    return op?.endsWith('-') ? arg! : '';
  });
}

function deepInterpolate(node: unknown, vars: Env): unknown {
  if (typeof node === 'string') return interpolate(node, vars);
  if (Array.isArray(node)) return node.map((n) => deepInterpolate(n, vars));
  if (typeof node === 'object' && node !== null) return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, deepInterpolate(v, vars)]));
  return node;
}

function loadCompose(): { services: Record<string, Obj> } {
  const raw: unknown = parse(readFileSync(join(deployDir, 'compose.yml'), 'utf8'), { merge: true });
  const services = obj(obj(deepInterpolate(raw, composeVars)).services);
  return { services: Object.fromEntries(Object.entries(services).map(([name, s]) => [name, obj(s)])) };
}

function composeEnv(service: Obj): Env {
  const env = service.environment;
  if (Array.isArray(env)) return Object.fromEntries(env.map((e) => str(e).split(/=(.*)/s).slice(0, 2) as [string, string]));
  return Object.fromEntries(Object.entries(obj(env)).map(([k, v]) => [k, str(v)]));
}

const stevedoreServices = (services: Record<string, Obj>): [string, Obj][] => Object.entries(services).filter(([, s]) => str(s.image).startsWith('stevedore:'));
const listenPort = (listen: string): number => Number(listen.slice(listen.lastIndexOf(':') + 1));

test('compose.yml runs three replicas, redis, an S3 gateway with its bucket, and nginx', () => {
  const { services } = loadCompose();
  const replicas = stevedoreServices(services);
  assert.equal(replicas.length, 3);
  const adverts = replicas.map(([, s]) => composeEnv(s).STEVEDORE_CLUSTER_ADVERTISE);
  assert.equal(new Set(adverts).size, 3, `distinct advertise URLs: ${adverts.join(', ')}`);
  for (const [name, s] of replicas) {
    assert.equal(composeEnv(s).STEVEDORE_CLUSTER_ADVERTISE, `http://${name}:5000`);
    const build = obj(s.build);
    assert.equal(resolve(deployDir, str(build.context)), resolve(repoRoot), `${name} builds from the repository root`);
    assert.equal(str(build.dockerfile || 'Dockerfile'), 'Dockerfile');
  }
  const images = Object.values(services).map((s) => str(s.image));
  assert.ok(images.includes('redis:7'), 'a redis:7 service');
  assert.ok(images.includes('minio/minio'), 'a MinIO gateway');
  const mc = Object.values(services).find((s) => str(s.image) === 'minio/mc');
  assert.ok(mc, 'a one-shot minio/mc service');
  assert.match(list(mc.command).map(str).join(' '), /mc mb --ignore-existing \S+\/stevedore\b/);
  const nginx = Object.values(services).find((s) => str(s.image) === 'nginx:stable');
  assert.ok(nginx, 'an nginx:stable front');
  assert.ok(list(nginx.volumes).map(str).includes('./nginx.conf:/etc/nginx/nginx.conf:ro'));
  assert.deepEqual(Object.keys(obj(nginx.depends_on)).sort(), replicas.map(([n]) => n).sort(), 'nginx waits for every replica');
});

test("each compose replica's config loads and validates with the env compose gives it", (t) => {
  const { services } = loadCompose();
  const image = imageEnv();
  assert.ok(image.STEVEDORE_CONFIG, 'the Dockerfile sets STEVEDORE_CONFIG');
  const minio = Object.values(services).find((s) => str(s.image) === 'minio/minio')!;
  for (const [name, s] of stevedoreServices(services)) {
    const mount = list(s.volumes).map(str).find((v) => v.split(':')[1] === image.STEVEDORE_CONFIG);
    assert.ok(mount, `${name} mounts its config at the image's ${image.STEVEDORE_CONFIG}`);
    const [host, , mode] = mount.split(':');
    assert.equal(mode, 'ro', `${name}'s config is read-only`);
    const env = { ...image, ...composeEnv(s) };
    const config = loadConfig({ file: resolve(deployDir, host!), env, cwd: scratch(t) });
    assert.equal(config.storage.driver, 's3');
    assert.ok(config.cluster.redis, 'cluster.redis is set');
    assert.equal(config.cluster.advertise, `http://${name}:${listenPort(config.listen)}`);
    assert.equal(config.cluster.secret, composeVars.STEVEDORE_CLUSTER_SECRET);
    assert.ok(services[new URL(config.cluster.redis).hostname], 'cluster.redis names a compose service');
    assert.ok(services[new URL(config.storage.s3.endpoint).hostname], 'storage.s3.endpoint names a compose service');
    assert.equal(config.storage.s3.forcePathStyle, true);
    assert.equal(config.storage.s3.accessKeyId, composeEnv(minio).MINIO_ROOT_USER);
    assert.equal(config.storage.s3.secretAccessKey, composeEnv(minio).MINIO_ROOT_PASSWORD);
    assert.ok(list(s.volumes).map(str).some((v) => v.split(':')[1] === config.cache.dir), `${name} has a volume for cache.dir`);
  }
});

function nginxConf(): string {
  return readFileSync(join(deployDir, 'nginx.conf'), 'utf8').replace(/#.*$/gm, '');
}

test("nginx.conf balances over the compose replicas and streams unbuffered", () => {
  const conf = nginxConf();
  const upstream = /upstream\s+(\S+)\s*\{([^}]*)\}/.exec(conf);
  assert.ok(upstream, 'an upstream block');
  const servers = [...upstream[2]!.matchAll(/^\s*server\s+(\S+)/gm)].map((m) => m[1]);
  const expected = stevedoreServices(loadCompose().services).map(([name]) => `${name}:5000`);
  assert.deepEqual(servers.sort(), expected.sort());
  assert.match(conf, new RegExp(`proxy_pass\\s+http://${upstream[1]};`));
  for (const directive of [
    /proxy_buffering\s+off;/,
    /proxy_request_buffering\s+off;/,
    /client_max_body_size\s+0;/,
    /proxy_http_version\s+1\.1;/,
    /proxy_set_header\s+Connection\s+"";/,
    /proxy_set_header\s+Host\s+\$http_host;/,
    /proxy_next_upstream\s+error\s+timeout\s+http_502\s+http_503;/,
    /keepalive\s+\d+;/,
  ]) {
    assert.match(conf, directive);
  }
});

const nginx = requirement('nginx', (await onPath(['nginx'])) ? undefined : 'nginx not installed (apt-get install nginx-light)');

nginx.test('nginx -t accepts nginx.conf (replicas at 127.0.0.1, logs and temp files in a scratch dir)', (t) => {
  const dir = scratch(t);
  const names = stevedoreServices(loadCompose().services).map(([name]) => name);
  let copy = readFileSync(join(deployDir, 'nginx.conf'), 'utf8');
  for (const name of names) copy = copy.replaceAll(`${name}:`, '127.0.0.1:');
  copy = copy.replaceAll('/var/log/nginx/', `${dir}/`);
  // Temp paths inside the scratch dir, so the check needs no system directories.
  const temps = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `    ${k}_temp_path ${join(dir, k)};`).join('\n');
  copy = copy.replace(/^http\s*\{/m, (open) => `${open}\n${temps}`);
  writeFileSync(join(dir, 'nginx.conf'), copy);
  const run = spawnSync('nginx', ['-t', '-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(run.status, 0, `nginx -t failed:\n${run.stderr}`);
});

interface K8sDoc {
  kind: string;
  metadata: { name: string };
  [key: string]: unknown;
}

function k8sDocs(): K8sDoc[] {
  const docs: K8sDoc[] = [];
  for (const file of readdirSync(k8sDir).filter((f) => f.endsWith('.yaml')).sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(k8sDir, file), 'utf8'))) {
      assert.deepEqual(doc.errors, [], `${file} parses`);
      const value = obj(doc.toJS());
      if (Object.keys(value).length === 0) continue;
      assert.ok(str(value.kind) && str(obj(value.metadata).name), `${file}: every document has a kind and a name`);
      docs.push(value as K8sDoc);
    }
  }
  return docs;
}

function one(docs: K8sDoc[], kind: string): K8sDoc {
  const found = docs.filter((d) => d.kind === kind);
  assert.equal(found.length, 1, `one ${kind}`);
  return found[0]!;
}

/** Every label of `selector` is on the pods, and there is at least one. */
function assertSelects(selector: unknown, podLabels: Obj, what: string): void {
  const labels = Object.entries(obj(selector));
  assert.ok(labels.length > 0, `${what} selects by label`);
  for (const [k, v] of labels) assert.equal(podLabels[k], v, `${what} selects ${k}=${str(v)}, as the pods are labelled`);
}

function k8sParts(): { docs: K8sDoc[]; deployment: Obj; pod: Obj; podLabels: Obj; container: Obj } {
  const docs = k8sDocs();
  const deployment = obj(one(docs, 'Deployment').spec);
  const template = obj(deployment.template);
  const pod = obj(template.spec);
  const container = obj(list(pod.containers)[0]);
  return { docs, deployment, pod, podLabels: obj(obj(template.metadata).labels), container };
}

test('the Kubernetes manifests fit together: labels, replicas, ports, mounts', () => {
  const { docs, deployment, pod, podLabels, container } = k8sParts();
  for (const kind of ['ConfigMap', 'Deployment', 'Service', 'PodDisruptionBudget', 'Secret']) one(docs, kind);
  assert.ok(Number(deployment.replicas) >= 3, 'three replicas or more');
  assertSelects(obj(deployment.selector).matchLabels, podLabels, 'the Deployment');
  const pdb = obj(one(docs, 'PodDisruptionBudget').spec);
  assertSelects(obj(pdb.selector).matchLabels, podLabels, 'the PodDisruptionBudget');
  assert.ok(pdb.maxUnavailable === 1 || Number(pdb.minAvailable) === Number(deployment.replicas) - 1, 'one replica down at a time');
  const service = obj(one(docs, 'Service').spec);
  assertSelects(service.selector, podLabels, 'the Service');
  const ports = list(container.ports).map(obj);
  for (const port of list(service.ports).map(obj)) {
    assert.ok(ports.some((p) => p.name === port.targetPort || p.containerPort === port.targetPort), `the Service's targetPort ${str(port.targetPort)} is a container port`);
  }
  const names = (kind: string): string[] => docs.filter((d) => d.kind === kind).map((d) => d.metadata.name);
  const volumes = list(pod.volumes).map(obj);
  assert.ok(volumes.some((v) => names('ConfigMap').includes(str(obj(v.configMap).name))), 'a volume of the ConfigMap');
  assert.ok(volumes.some((v) => names('Secret').includes(str(obj(v.secret).secretName))), 'a volume of the Secret');
  assert.ok(Number(pod.terminationGracePeriodSeconds) > 30, 'longer than limits.shutdownGrace');
  const security = obj(container.securityContext);
  assert.equal(security.readOnlyRootFilesystem, true);
  assert.equal(obj(pod.securityContext).runAsNonRoot, true);
  assert.ok(obj(container.resources).requests, 'resource requests');
});

/** The container's environment as the kubelet would give it: downward API, $(VAR) expansion, and _FILE paths remapped into `secretsDir`. */
function podEnv(container: Obj, pod: Obj, docs: K8sDoc[], secretsDir: string): Env {
  const secret = one(docs, 'Secret');
  const data = obj(secret.stringData);
  const secretMount = list(container.volumeMounts).map(obj).find((m) =>
    list(pod.volumes).map(obj).some((v) => v.name === m.name && obj(v.secret).secretName === secret.metadata.name),
  );
  assert.ok(secretMount, 'the Secret is mounted');
  for (const [key, value] of Object.entries(data)) writeFileSync(join(secretsDir, key), str(value));
  const env: Env = {};
  for (const entry of list(container.env).map(obj)) {
    const name = str(entry.name);
    const field = str(obj(obj(entry.valueFrom).fieldRef).fieldPath);
    let value = field === 'status.podIP' ? SAMPLE_POD_IP : str(entry.value).replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, v: string) => env[v] ?? whole);
    const ref = obj(obj(entry.valueFrom).secretKeyRef);
    if (ref.key) value = str(data[str(ref.key)]);
    const mountPath = str(secretMount.mountPath).replace(/\/$/, '');
    if (name.endsWith('_FILE') && value.startsWith(`${mountPath}/`)) value = join(secretsDir, value.slice(mountPath.length + 1));
    env[name] = value;
  }
  return env;
}

test("the Deployment's config loads and validates with the env the pod gets", (t) => {
  const { docs, pod, container } = k8sParts();
  const dir = scratch(t);
  const secretsDir = join(dir, 'secrets');
  mkdirSync(secretsDir);
  const env = { ...imageEnv(), ...podEnv(container, pod, docs, secretsDir) };
  const configPath = env.STEVEDORE_CONFIG!;
  const mounts = list(container.volumeMounts).map(obj);
  const configMount = mounts.find((m) => configPath.startsWith(`${str(m.mountPath).replace(/\/$/, '')}/`));
  assert.ok(configMount, `something is mounted where STEVEDORE_CONFIG (${configPath}) points`);
  const configMapName = str(obj(list(pod.volumes).map(obj).find((v) => v.name === configMount.name)?.configMap).name);
  const configMap = docs.find((d) => d.kind === 'ConfigMap' && d.metadata.name === configMapName);
  assert.ok(configMap, `${configPath} comes from a ConfigMap`);
  const key = configPath.slice(str(configMount.mountPath).replace(/\/$/, '').length + 1);
  const text = str(obj(configMap.data)[key]);
  assert.ok(text, `the ConfigMap has the key ${key}`);
  writeFileSync(join(dir, 'mirror.yml'), text);
  const config = loadConfig({ file: join(dir, 'mirror.yml'), env, cwd: dir });
  const port = listenPort(config.listen);
  assert.equal(config.storage.driver, 's3');
  assert.ok(config.cluster.redis, 'cluster.redis is set');
  assert.equal(config.cluster.advertise, `http://${SAMPLE_POD_IP}:${port}`);
  assert.equal(config.cluster.secret, str(obj(one(docs, 'Secret').stringData)['cluster-secret']));
  assert.ok(config.cluster.secret.length >= 16);
  assert.ok(list(container.ports).map(obj).some((p) => p.containerPort === port), `a container port is the config's listen port ${port}`);
  assert.ok(mounts.some((m) => m.mountPath === config.cache.dir && !m.readOnly), 'cache.dir is a writable volume (the root file system is read-only)');
});

test('the probes ask for paths the server really serves, on the listen port', async (t) => {
  const { container } = k8sParts();
  const probes = [obj(container.readinessProbe), obj(container.livenessProbe)].map((p) => obj(p.httpGet));
  const named = new Map(list(container.ports).map(obj).map((p) => [str(p.name), p.containerPort]));
  for (const probe of probes) {
    assert.ok(probe.path, 'an httpGet probe');
    assert.equal(named.get(str(probe.port)) ?? probe.port, 5000);
  }
  // Nothing listens on port 9: the upstream is never needed to answer health.
  const mirror = await startMirror({ upstreams: [{ registry: 'docker.io', url: 'http://127.0.0.1:9' }] });
  t.after(() => mirror.stop());
  for (const path of new Set(probes.map((p) => str(p.path)))) {
    const res = await request(`${mirror.url}${path}`);
    await res.body.dump();
    assert.equal(res.statusCode, 200, `GET ${path}`);
  }
});

test('the image and npm start run node with the flags the tests and benchmarks serve with (a 4 MiB semi-space)', () => {
  const dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8');
  const entrypoint = /^ENTRYPOINT\s+(\[.*\])$/m.exec(dockerfile)?.[1];
  assert.deepEqual(JSON.parse(entrypoint ?? 'null'), ['node', ...SERVE_NODE_FLAGS, 'dist/cli.js']);
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  assert.equal(pkg.scripts.start, `tsx ${SERVE_NODE_FLAGS.join(' ')} src/cli.ts serve`);
});
