import type { TokenSubject } from '../../protocol/token.js';
import { tokenFor } from './hub.js';

export interface ApiAnswer {
  status: number;
  headers: Headers;
  body: { ok: boolean; data?: Record<string, unknown>; error?: { code: string; message: string } };
}

/**
 * `method` on the hub's HTTP API at `url` + `/api` + `path`, with a token for `as` when given. A
 * `body` is sent as JSON; a string is sent as it is (for a body that is not JSON).
 */
export async function api(url: string, method: string, path: string, body?: unknown, as?: TokenSubject, headers: Record<string, string> = {}): Promise<ApiAnswer> {
  const sent: Record<string, string> = { 'content-type': 'application/json', ...headers };
  if (as) sent['authorization'] = `Bearer ${tokenFor(as)}`;
  const res = await fetch(`${url}/api${path}`, { method, headers: sent, ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}) });
  return { status: res.status, headers: res.headers, body: (await res.json()) as ApiAnswer['body'] };
}
