import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import * as tls from 'node:tls';
import { Agent, EnvHttpProxyAgent, errors, Pool, ProxyAgent, type buildConnector, type Dispatcher } from 'undici';
import { ForbiddenAddressError, guardedLookup, isForbiddenAddress, type TargetAllowance } from './address-guard.js';

/**
 * How one endpoint reaches the network: directly, or through a forward proxy
 * (CONNECT tunnels, for http and https upstreams alike), with the endpoint's
 * extra CAs and the address guard either way.
 */
export interface EgressOptions {
  /** '' = HTTPS_PROXY / HTTP_PROXY / NO_PROXY (or lower case) from `env`; 'none' = direct; else a proxy URL. */
  proxy: string;
  /** A PEM file of CA certificates trusted besides the default ones; '' for none. */
  caFile: string;
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  connections: number;
  keepAliveTimeoutMs: number;
  /** Where the guard lets connections go although private; undefined turns the guard off. */
  allowance: TargetAllowance | undefined;
  /** The environment proxies are read from; process.env by default. */
  env?: NodeJS.ProcessEnv;
}

export interface Egress {
  dispatcher: Dispatcher;
  /** The proxy in use, credentials masked, for logs; undefined when direct. */
  proxy: string | undefined;
}

/** Builds the dispatcher an endpoint sends everything through: requests, redirects, probes and token fetches. */
export function createEgress(options: EgressOptions): Egress {
  const ca = options.caFile ? trustedCertificates(options.caFile, options.env ?? process.env) : undefined;
  const common = {
    headersTimeout: options.headersTimeoutMs,
    bodyTimeout: options.bodyTimeoutMs,
    connections: options.connections,
    keepAliveTimeout: options.keepAliveTimeoutMs,
  };
  // Direct connections resolve the target themselves, through the guarded lookup (which also defeats rebinding).
  const connect = { timeout: options.connectTimeoutMs, ...(ca ? { ca } : {}), ...(options.allowance ? { lookup: guardedLookup(options.allowance) } : {}) };
  // Through a proxy the proxy resolves the target: the tunnel is guarded before it is asked for.
  const tunnelled = {
    ...common,
    proxyTls: { timeout: options.connectTimeoutMs },
    requestTls: { timeout: options.connectTimeoutMs, ...(ca ? { ca } : {}) },
    factory: tunnelFactory(options.allowance, options.connectTimeoutMs),
  };
  if (options.proxy === 'none') return { dispatcher: new Agent({ ...common, connect }), proxy: undefined };
  if (options.proxy !== '') {
    return { dispatcher: new ProxyAgent({ ...tunnelled, uri: options.proxy }), proxy: maskCredentials(options.proxy) };
  }
  const env = options.env ?? process.env;
  // The precedence undici's EnvHttpProxyAgent reads them with: lower case first, HTTPS_PROXY falling back to HTTP_PROXY.
  const httpProxy = env.http_proxy ?? env.HTTP_PROXY ?? '';
  const httpsProxy = env.https_proxy ?? env.HTTPS_PROXY ?? '';
  if (!httpProxy && !httpsProxy) return { dispatcher: new Agent({ ...common, connect }), proxy: undefined };
  const noProxy = env.no_proxy ?? env.NO_PROXY ?? '';
  return {
    dispatcher: new EnvHttpProxyAgent({ ...tunnelled, connect, httpProxy, httpsProxy, noProxy }),
    proxy: [httpsProxy && `https: ${maskCredentials(httpsProxy)}`, httpProxy && `http: ${maskCredentials(httpProxy)}`, noProxy && `no_proxy: ${noProxy}`].filter(Boolean).join(', '),
  };
}

/** A proxy URL fit for logs: user and password replaced. */
export function maskCredentials(proxy: string): string {
  try {
    const url = new URL(proxy);
    if (!url.username && !url.password) return url.href;
    url.username = '***';
    url.password = '';
    return url.href;
  } catch {
    return '(unparsable proxy URL)';
  }
}

/**
 * The CAs of `caFile` plus the ones Node trusts by default, since a `ca`
 * option replaces the defaults: the bundled store and NODE_EXTRA_CA_CERTS
 * (Node 20 has no tls.getCACertificates to ask for both at once).
 */
function trustedCertificates(caFile: string, env: NodeJS.ProcessEnv): string[] {
  let pem: string;
  try {
    pem = readFileSync(caFile, 'utf8');
  } catch (err) {
    throw new Error(`upstream CA file ${caFile} cannot be read: ${(err as Error).message}`, { cause: err });
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new Error(`upstream CA file ${caFile} holds no PEM certificate`);
  const getDefaults = (tls as { getCACertificates?: (type: 'default') => string[] }).getCACertificates;
  if (getDefaults) return [...getDefaults('default'), pem];
  const extra = env.NODE_EXTRA_CA_CERTS ? readOptional(env.NODE_EXTRA_CA_CERTS) : undefined;
  return [...tls.rootCertificates, ...(extra ? [extra] : []), pem];
}

function readOptional(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined; // Node warned about it at startup already
  }
}

type Connector = buildConnector.connector;
type ConnectOptions = buildConnector.Options & { signal?: AbortSignal };

/**
 * The pools of a proxy's tunnels: their connect function (undici's CONNECT
 * through the proxy) first runs the target past the guard, and the connect
 * timeout bounds the whole tunnel set-up, not only reaching the proxy.
 * Pools of direct connections (NO_PROXY) keep their guarded lookup.
 */
function tunnelFactory(allowance: TargetAllowance | undefined, timeoutMs: number) {
  return (origin: string | URL, opts: object): Dispatcher => {
    const options = opts as Pool.Options;
    const tunnel = options.connect;
    if (typeof tunnel !== 'function') return new Pool(origin, options);
    const connect = (target: ConnectOptions, callback: buildConnector.Callback): void => {
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(new errors.ConnectTimeoutError(`Connect Timeout Error (tunnel to ${target.host} through the proxy, timeout ${timeoutMs}ms)`)), timeoutMs);
      const done: buildConnector.Callback = (...args) => {
        clearTimeout(timer);
        (callback as (...a: unknown[]) => void)(...args);
      };
      checkTunnelTarget(target.hostname, allowance).then(
        () => (tunnel as (o: ConnectOptions, cb: buildConnector.Callback) => void)({ ...target, signal: controller.signal }, done),
        (err: Error) => done(err, null),
      );
    };
    return new Pool(origin, { ...options, connect: connect as Connector });
  };
}

/**
 * The guard for a target the proxy will resolve: literal addresses are
 * checked as they are, names are resolved here with the guarded lookup and
 * refused when they lead to a forbidden address. A name this host cannot
 * resolve goes to the proxy (in networks where only the proxy resolves
 * outside names, refusing it would refuse every pull); and the proxy
 * resolves again, so a name that rebinds in between is the proxy's to judge.
 */
function checkTunnelTarget(hostname: string, allowance: TargetAllowance | undefined): Promise<void> {
  const host = hostname.replace(/^\[(.*)\]$/, '$1');
  if (!allowance || allowance.host(host)) return Promise.resolve();
  if (isIP(host) !== 0) {
    return isForbiddenAddress(host) && !allowance.address(host) ? Promise.reject(new ForbiddenAddressError(host, host)) : Promise.resolve();
  }
  return new Promise((resolve, reject) => {
    guardedLookup(allowance)(host, { all: true }, (err) => (err instanceof ForbiddenAddressError ? reject(err) : resolve()));
  });
}
