import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import type { ClientRequest, IncomingMessage, RequestOptions } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { ForbiddenDestinationError, forbiddenReason, guardedLookup, hostOf } from './ssrf.js';

/** What one attempt came to: a 2xx, or why not (a status, a time-out, a connection error). */
export type PostResult = { ok: true; status: number } | { ok: false; error: string };

export interface PosterOptions {
  /** How long an attempt may take, connect to response, in ms. */
  timeoutMs: number;
  /** Allow loopback, private and link-local destinations (`--webhook-allow-private`). */
  allowPrivate: boolean;
}

/** A response body is read to free the connection, never kept: this much at most is even read. */
const MAX_RESPONSE_BYTES = 64 * 1024;

/**
 * POSTs webhook bodies. Keep-alive agents of its own, so connections to a receiver are reused and
 * `close()` can end them all; no redirects are followed (a 3xx is a failure), so a receiver cannot
 * send the hub somewhere the guard would refuse.
 */
export class Poster {
  private readonly agents;
  private readonly inFlight = new Set<ClientRequest>();
  private readonly lookup: ReturnType<typeof guardedLookup> | undefined;

  constructor(private readonly options: PosterOptions) {
    // the guard on the address connected to, for every new connection: DNS rebinding cannot get past it
    this.lookup = options.allowPrivate ? undefined : guardedLookup();
    const agentOptions = { keepAlive: true, maxSockets: 16, ...(this.lookup ? { lookup: this.lookup } : {}) };
    this.agents = { http: new HttpAgent(agentOptions), https: new HttpsAgent(agentOptions) };
  }

  post(url: string, headers: Record<string, string>, body: string): Promise<PostResult> {
    const target = new URL(url);
    const host = hostOf(target);
    // an IP literal is never looked up, so the lookup guard does not see it: checked here
    if (!this.options.allowPrivate && isIP(host) !== 0) {
      const reason = forbiddenReason(host);
      if (reason !== undefined) return Promise.resolve({ ok: false, error: `refused: ${host} is ${reason}` });
    }
    const https = target.protocol === 'https:';
    const options: RequestOptions = {
      method: 'POST',
      agent: https ? this.agents.https : this.agents.http,
      headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), 'user-agent': 'CAPS-Webhooks/1', ...headers },
      timeout: this.options.timeoutMs,
      ...(this.lookup ? { lookup: this.lookup } : {}),
    };
    return new Promise<PostResult>((resolve) => {
      let settled = false;
      const done = (result: PostResult): void => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        this.inFlight.delete(req);
        resolve(result);
      };
      const req = (https ? httpsRequest : httpRequest)(target, options, (res: IncomingMessage) => {
        const status = res.statusCode ?? 0;
        let read = 0;
        res.on('data', (chunk: Buffer) => {
          read += chunk.length;
          // a receiver that streams without end is not read to its end
          if (read > MAX_RESPONSE_BYTES) res.destroy();
        });
        res.on('error', () => undefined);
        const judged = (): void => done(status >= 200 && status < 300 ? { ok: true, status } : { ok: false, error: `HTTP ${status}` });
        res.on('end', judged);
        res.on('close', judged);
      });
      // `timeout` above is the socket's idle time; this bounds the whole attempt
      const deadline = setTimeout(() => req.destroy(new Error(`timed out after ${this.options.timeoutMs} ms`)), this.options.timeoutMs);
      req.on('error', (err: NodeJS.ErrnoException) => {
        const reason = err instanceof ForbiddenDestinationError ? `refused: ${err.message}` : `${err.code ? `${err.code}: ` : ''}${err.message}`;
        done({ ok: false, error: reason });
      });
      req.on('timeout', () => req.destroy(new Error(`no answer for ${this.options.timeoutMs} ms`)));
      this.inFlight.add(req);
      req.end(body);
    });
  }

  /** Aborts the attempts in flight (they count as not made) and ends every connection. */
  close(): void {
    for (const req of this.inFlight) req.destroy(new Error('the hub is closing'));
    this.agents.http.destroy();
    this.agents.https.destroy();
  }
}
