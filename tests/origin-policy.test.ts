import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocket } from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { OriginPolicy } from '../hub/origin-policy.js';
import { launchChromium } from './helpers/browser.js';
import { within } from './helpers/hub-process.js';
import { Cleanup, RawClient, records, startHub } from './helpers/hub.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

describe('the origin and host policy', () => {
  const policy = new OriginPolicy(['https://shop.example.com'], () => 3000);
  const allowed = (origin: string | undefined, host: string | undefined): boolean => policy.check(origin, host) === undefined;

  it('lets in clients that are not pages, the hub’s own pages, localhost on its port and listed origins', () => {
    expect(allowed(undefined, '127.0.0.1:3000')).toBe(true);
    expect(allowed(undefined, undefined)).toBe(true);
    expect(allowed('http://192.168.1.5:3000', '192.168.1.5:3000')).toBe(true);
    expect(allowed('http://localhost:3000', '127.0.0.1:3000')).toBe(true);
    expect(allowed('http://[::1]:3000', 'localhost:3000')).toBe(true);
    expect(allowed('https://shop.example.com', 'localhost:3000')).toBe(true);
    expect(allowed('HTTPS://Shop.Example.com:443', 'localhost:3000')).toBe(true);
    expect(allowed(undefined, 'shop.example.com')).toBe(true);
    expect(allowed(undefined, '[::1]:3000')).toBe(true);
  });

  it('refuses pages of other origins, and names the hub is not served as (DNS rebinding)', () => {
    expect(allowed('http://evil.example', '127.0.0.1:3000')).toBe(false);
    expect(allowed('http://localhost:5173', 'localhost:3000')).toBe(false);
    expect(allowed('null', 'localhost:3000')).toBe(false);
    expect(allowed('https://shop.example.com.evil.example', 'localhost:3000')).toBe(false);
    expect(allowed(undefined, 'rebind.evil.example:3000')).toBe(false);
    expect(allowed('http://rebind.evil.example:3000', 'rebind.evil.example:3000')).toBe(false);
    expect(allowed(undefined, '127.0.0.1.evil.example')).toBe(false);
    expect(policy.check('http://evil.example', 'localhost:3000')).toMatchObject({ code: 'CAPS_ERR_FORBIDDEN', message: expect.stringContaining('--allowed-origins http://evil.example') });
    expect(new OriginPolicy(['*'], () => 3000).check('http://evil.example', 'rebind.evil.example')).toBeUndefined();
  });

  it('with tokens only, lets any host name reach the hub (a container network’s), still refusing other origins', () => {
    const tokens = new OriginPolicy([], () => 3000, false);
    expect(tokens.check(undefined, 'caps-server:3000')).toBeUndefined();
    expect(tokens.check('http://caps-server:3000', 'caps-server:3000')).toBeUndefined();
    expect(tokens.check('http://evil.example', 'caps-server:3000')).toMatchObject({ code: 'CAPS_ERR_FORBIDDEN' });
    // and a final dot names the same host
    expect(policy.check(undefined, 'localhost.:3000')).toBeUndefined();
  });
});

/** An HTTP GET with a Host header of our choosing (fetch does not let one be set). */
function getWithHost(url: string, path: string, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { headers: { host } }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('a lab-mode hub and pages of other sites', () => {
  it('refuses a socket from a page on another origin in a real Chromium, and lets one in once its origin is allowed', async () => {
    const other = createServer((_req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end('<!doctype html><title>elsewhere</title>');
    });
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    cleanup.add(other, (s) => {
      // the browser's keep-alive connections would hold close() open
      s.closeAllConnections();
      return new Promise<void>((resolve) => s.close(() => resolve()));
    });
    const otherOrigin = `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
    const browser = cleanup.add(
      await launchChromium(),
      (b) => b.close(),
    );

    /** What a page of `otherOrigin` gets when it tries the hub, by websocket and by long-polling. */
    const attempt = async (hubUrl: string): Promise<string[]> => {
      const page = await browser.newPage();
      page.setDefaultTimeout(15_000);
      await page.goto(otherOrigin);
      await page.addScriptTag({ url: `${hubUrl}/socket.io/socket.io.js` });
      return page.evaluate(async (url) => {
        const w = globalThis as unknown as { io: (u: string, o: object) => { on(e: string, f: (x?: { message: string }) => void): void; close(): void } };
        const one = (transports: string[]): Promise<string> =>
          new Promise((resolve) => {
            const socket = w.io(`${url}/caps`, { transports, reconnection: false, timeout: 5_000 });
            socket.on('connect', () => {
              socket.close();
              resolve('connected');
            });
            socket.on('connect_error', () => {
              socket.close();
              resolve('refused');
            });
          });
        return [await one(['websocket']), await one(['polling', 'websocket'])];
      }, hubUrl);
    };

    const closed = cleanup.add(await startHub({ host: '127.0.0.1' }), (h) => h.close());
    expect(await attempt(closed.url)).toEqual(['refused', 'refused']);
    expect(closed.hub.metrics.refusedCount('CAPS_ERR_FORBIDDEN')).toBeGreaterThanOrEqual(2);
    // one line per origin, however often it tries
    expect(records(closed.logs, 'REFUSED ORIGIN')).toEqual([expect.objectContaining({ origin: otherOrigin })]);

    const open = cleanup.add(await startHub({ host: '127.0.0.1', allowedOrigins: [otherOrigin] }), (h) => h.close());
    expect(await attempt(open.url)).toEqual(['connected', 'connected']);
    // the browser first: a long-poll it still holds would keep a hub's close waiting
    await browser.close();
  }, 60_000);

  it('refuses HTTP and websockets under a host name it is not served as (DNS rebinding), and answers its own', async () => {
    const { url } = cleanup.add(await startHub({ host: '127.0.0.1' }), (h) => h.close());
    const port = new URL(url).port;
    const rebound = await getWithHost(url, '/api/stores', `rebind.evil.example:${port}`);
    expect(rebound.status).toBe(403);
    expect(JSON.parse(rebound.body)).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_FORBIDDEN' } });
    expect((await getWithHost(url, '/api/stores', `localhost:${port}`)).status).toBe(200);

    const ws = new WebSocket(`${url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`, { headers: { host: `rebind.evil.example:${port}` } });
    ws.on('error', () => undefined);
    cleanup.add(ws, (w) => w.terminate());
    const refusal = await within(
      new Promise<{ status: number; body: string }>((resolve) =>
        ws.once('unexpected-response', (_req, res) => {
          let body = '';
          res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        }),
      ),
      5_000,
      'the upgrade to be refused',
    );
    // engine.io answers a refused upgrade with 400 and the reason
    expect(refusal).toMatchObject({ status: 400, body: expect.stringContaining('CAPS_ERR_FORBIDDEN') });
    // a client that is not a page, by its address: still welcome
    const client = cleanup.add(new RawClient(url), (c) => c.close());
    await client.connected();
  });
});
