import { request } from 'undici';

/** Talks to the admin API of the server that owns the cache directory. */
export class AdminClient {
  constructor(
    private readonly baseUrl: string,
    private readonly token: string,
  ) {}

  async call<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const res = await request(`${this.baseUrl}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      headersTimeout: 600_000,
      bodyTimeout: 600_000,
    });
    const text = await res.body.text();
    if (res.statusCode >= 400) throw new Error(`${method} ${path} failed with ${res.statusCode}: ${text.slice(0, 500)}`);
    return JSON.parse(text) as T;
  }
}
