// Tag lists against the real registry behind the Docker Hub double: the whole
// list cached per repository, paged here as the distribution-spec says
// (lexical order, n, last, Link), served stale while the upstream is down.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { pushImage } from '../support/seed.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { get, type Fetched } from '../support/http.js';

let registry: RegistryHandle;
let hub: HubDouble;
let mirror: TestMirror;
const clock = { ms: Date.now(), now(): number { return this.ms; } };
// Pushed in this order; the spec's order is lexical.
const PUSHED = ['1.1', '1.2', '1.0', 'latest', '0.9', '1.10'];
const LEXICAL = ['0.9', '1.0', '1.1', '1.10', '1.2', 'latest'];

before(async () => {
  registry = await startRegistry();
  for (const tag of PUSHED) await pushImage(registry.url, 'acme/versions', tag, { layers: [100], format: 'docker' });
  hub = await startHubDouble({ upstream: registry.url });
  mirror = await startMirror({ upstreams: [{ registry: 'docker.io', url: hub.url }], cache: { tagTtl: '5m', maxStale: '1h' }, clock });
});

after(async () => {
  await mirror?.stop();
  await hub?.stop();
  await registry?.stop();
});

const body = (res: Fetched): { name: string; tags: string[] } => JSON.parse(res.body.toString()) as { name: string; tags: string[] };
const tagListRequests = (): number => hub.stats().requests.filter((r) => r.path.endsWith('/tags/list')).length;
const errorCode = (res: Fetched): string | undefined => (JSON.parse(res.body.toString()) as { errors?: { code: string }[] }).errors?.[0]?.code;
const outcomes = (): unknown[] => mirror.logs().filter((l) => l.msg === 'request' && String(l.path).endsWith('/tags/list')).map((l) => l.cache);

test('tags come in lexical order, paged by n and last with a Link to the next page, and paging costs one upstream request', async () => {
  hub.resetStats();
  const all = await get(`${mirror.url}/v2/acme/versions/tags/list`);
  assert.equal(all.status, 200);
  assert.equal(all.headers['content-type'], 'application/json; charset=utf-8');
  assert.deepEqual(body(all), { name: 'acme/versions', tags: LEXICAL });
  assert.equal(all.headers.link, undefined, 'no n: one page, no Link');

  // Walk the pages through the Link headers, as a client does.
  const seen: string[] = [];
  let next: string | undefined = '/v2/acme/versions/tags/list?n=4';
  for (let page = 0; next && page < 10; page++) {
    const res = await get(`${mirror.url}${next}`);
    assert.equal(res.status, 200, next);
    const tags = body(res).tags;
    assert.ok(tags.length <= 4 && tags.length > 0, `${next}: ${tags.length} tags`);
    seen.push(...tags);
    const link = res.headers.link as string | undefined;
    next = link ? /^<([^>]+)>; rel="next"$/.exec(link)?.[1] : undefined;
    if (link) assert.ok(next, `a Link the spec's way: ${link}`);
  }
  assert.deepEqual(seen, LEXICAL, 'the pages put together are the whole list, in order, once');

  const n1 = await get(`${mirror.url}/v2/acme/versions/tags/list?n=1`);
  assert.deepEqual(body(n1).tags, ['0.9'], 'n=1 gives one tag');
  assert.equal(n1.headers.link, '</v2/acme/versions/tags/list?n=1&last=0.9>; rel="next"');
  assert.deepEqual(body(await get(`${mirror.url}/v2/acme/versions/tags/list?n=2&last=1.1`)).tags, ['1.10', '1.2']);
  assert.deepEqual(body(await get(`${mirror.url}/v2/acme/versions/tags/list?last=1.10`)).tags, ['1.2', 'latest'], 'last without n: the rest');
  assert.deepEqual(body(await get(`${mirror.url}/v2/acme/versions/tags/list?last=1.05`)).tags, ['1.1', '1.10', '1.2', 'latest'], 'last needs not be a tag');
  const end = await get(`${mirror.url}/v2/acme/versions/tags/list?n=3&last=latest`);
  assert.deepEqual(body(end).tags, []);
  assert.equal(end.headers.link, undefined);
  const exact = await get(`${mirror.url}/v2/acme/versions/tags/list?n=6`);
  assert.deepEqual(body(exact).tags, LEXICAL);
  assert.equal(exact.headers.link, undefined, 'no next page when the list ends on this one');
  const zero = await get(`${mirror.url}/v2/acme/versions/tags/list?n=0`);
  assert.deepEqual(body(zero).tags, []);
  assert.equal(zero.headers.link, undefined);

  assert.equal(tagListRequests(), 1, 'every page came from the one cached list');
  assert.deepEqual(outcomes().slice(0, 2), ['miss', 'hit']);
});

test('a HEAD of the tag list and a bad n: headers only, and a spec error', async () => {
  const head = await get(`${mirror.url}/v2/acme/versions/tags/list`, {}, 'HEAD');
  assert.equal(head.status, 200);
  assert.equal(head.body.length, 0);
  assert.equal(Number(head.headers['content-length']), JSON.stringify({ name: 'acme/versions', tags: LEXICAL }).length);
  for (const n of ['-1', 'ten', '1e3', '99999999999']) {
    const bad = await get(`${mirror.url}/v2/acme/versions/tags/list?n=${n}`);
    assert.equal(bad.status, 400, n);
    assert.equal(errorCode(bad), 'UNSUPPORTED', n);
  }
  const missing = await get(`${mirror.url}/v2/acme/none/tags/list`);
  assert.equal(missing.status, 404);
  assert.equal(errorCode(missing), 'NAME_UNKNOWN');
});

test('past the TTL the list is fetched again; with the upstream down it is served stale, within maxStale only', async () => {
  await pushImage(registry.url, 'acme/versions', '2.0', { layers: [100], format: 'docker' });
  hub.resetStats();
  assert.deepEqual(body(await get(`${mirror.url}/v2/acme/versions/tags/list`)).tags, LEXICAL, 'fresh for tagTtl: not asked again');
  assert.equal(tagListRequests(), 0);
  clock.ms += 6 * 60_000;
  assert.deepEqual(body(await get(`${mirror.url}/v2/acme/versions/tags/list`)).tags, [...LEXICAL.slice(0, 5), '2.0', 'latest']);
  assert.equal(tagListRequests(), 1);

  await hub.down('refuse');
  try {
    clock.ms += 6 * 60_000;
    const stale = await get(`${mirror.url}/v2/acme/versions/tags/list?n=2&last=1.2`);
    assert.equal(stale.status, 200);
    assert.deepEqual(body(stale).tags, ['2.0', 'latest']);
    assert.equal(outcomes().at(-1), 'stale');
    clock.ms += 2 * 60 * 60_000;
    const tooOld = await get(`${mirror.url}/v2/acme/versions/tags/list`);
    assert.equal(tooOld.status, 503, 'past maxStale the outage shows');
  } finally {
    await hub.up();
  }
});

test('an upstream that pages its list: every page is fetched and merged, and the Link points back at the mirror', async (t) => {
  // docker-registry 2.8 does not paginate, so a tiny in-process upstream does.
  const seen: string[] = [];
  const pages: Record<string, { tags: string[]; link?: string }> = {
    '/v2/team/tool/tags/list': { tags: ['b', 'a'], link: '</v2/team/tool/tags/list?last=b&n=2>; rel="next"' },
    '/v2/team/tool/tags/list?last=b&n=2': { tags: ['d', 'c'], link: '</v2/team/tool/tags/list?last=d&n=2>; rel="next"' },
    '/v2/team/tool/tags/list?last=d&n=2': { tags: ['e'] },
  };
  const paged = createServer((req, res) => {
    seen.push(req.url ?? '');
    if (req.url === '/v2/') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    const page = pages[req.url ?? ''];
    if (!page) return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}');
    res.writeHead(200, { 'content-type': 'application/json', ...(page.link ? { link: page.link } : {}) });
    res.end(JSON.stringify({ name: 'team/tool', tags: page.tags }));
  });
  await new Promise<void>((r) => paged.listen(0, '127.0.0.1', r));
  const port = (paged.address() as AddressInfo).port;
  const m = await startMirror({ upstreams: [{ registry: 'docker.io', url: hub.url }, { registry: 'paged.example.com', url: `http://127.0.0.1:${port}` }] });
  t.after(async () => {
    await m.stop();
    await new Promise((r) => paged.close(r));
  });
  const viaPrefix = await get(`${m.url}/v2/paged.example.com/team/tool/tags/list?n=2`);
  assert.deepEqual(JSON.parse(viaPrefix.body.toString()), { name: 'paged.example.com/team/tool', tags: ['a', 'b'] });
  assert.equal(viaPrefix.headers.link, '</v2/paged.example.com/team/tool/tags/list?n=2&last=b>; rel="next"');
  const viaNs = await get(`${m.url}/v2/team/tool/tags/list?n=2&last=b&ns=paged.example.com`);
  assert.deepEqual(JSON.parse(viaNs.body.toString()).tags, ['c', 'd']);
  assert.equal(viaNs.headers.link, '</v2/team/tool/tags/list?n=2&last=d&ns=paged.example.com>; rel="next"');
  assert.deepEqual(seen.filter((u) => u.includes('/tags/list')), Object.keys(pages), 'each upstream page once, in order');
});
