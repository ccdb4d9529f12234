import { isIP } from 'node:net';
import { CapsError } from '../protocol/errors.js';

/**
 * Which web pages may talk to the hub (their `Origin`), and under which names it may be reached
 * (the `Host` header), checked on the Socket.IO handshake and upgrade and on every HTTP request.
 *
 * - Origin: a request without one is not from a browser page and is let through (tokens protect
 *   those); a page's own origin (the one it was served from, same `Host`) and the localhost forms of
 *   the hub's port always may; others only when listed in `--allowed-origins` (or `*`). So a page on
 *   another site cannot open a socket to an open lab-mode hub and read or forge its parcels.
 * - Host (`checkHosts`, the open lab mode): an IP address or `localhost` always; a domain name
 *   only when it is the host of an allowed origin. A page that rebinds its own domain name to
 *   127.0.0.1 (DNS rebinding) reaches the hub under that name as its own origin, and is refused.
 *   A hub that takes tokens only does not need it (such a page has no token), so there clients may
 *   use any name for it (`http://caps-server:3000` in a container network).
 */
export class OriginPolicy {
  private readonly any: boolean;
  private readonly origins: Set<string>;
  private readonly hosts: Set<string>;

  /** `allowed`: origins such as `https://shop.example.com`, or `*` for any. */
  constructor(
    allowed: readonly string[],
    private readonly port: () => number,
    private readonly checkHosts = true,
  ) {
    this.any = allowed.includes('*');
    this.origins = new Set(allowed.filter((o) => o !== '*').map((o) => normalizeOrigin(o)));
    this.hosts = new Set([...this.origins].map((o) => new URL(o).hostname));
  }

  /** Undefined when the request may go on; else the refusal (CAPS_ERR_FORBIDDEN). */
  check(origin: string | undefined, host: string | undefined): CapsError | undefined {
    if (this.any) return undefined;
    if (this.checkHosts && host !== undefined) {
      const hostname = hostnameOf(host);
      if (!this.knownHost(hostname)) return new CapsError('CAPS_ERR_FORBIDDEN', `this hub is not served as ${hostname}: add its origin with --allowed-origins (e.g. https://${hostname})`);
    }
    if (origin === undefined) return undefined;
    let url: URL;
    try {
      url = originUrl(origin);
    } catch {
      return new CapsError('CAPS_ERR_FORBIDDEN', `pages of origin ${JSON.stringify(origin.slice(0, 100))} may not use this hub`);
    }
    const normalized = url.origin;
    const own = host !== undefined && url.host === hostOf(host);
    if (own || this.origins.has(normalized) || this.localhostForm(url)) return undefined;
    return new CapsError('CAPS_ERR_FORBIDDEN', `pages of ${normalized} may not use this hub: start it with --allowed-origins ${normalized} to allow them`);
  }

  private knownHost(hostname: string): boolean {
    return isIP(hostname.replace(/^\[|\]$/g, '')) !== 0 || hostname === 'localhost' || hostname.endsWith('.localhost') || this.hosts.has(hostname);
  }

  /** http(s)://localhost, 127.0.0.1 or [::1] on the hub's own port. */
  private localhostForm(url: URL): boolean {
    const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
    return port === this.port() && (url.hostname === 'localhost' || url.hostname === '127.0.0.1' || url.hostname === '[::1]');
  }
}

/** `scheme://host[:port]`, lower case, without a default port or a path; throws on what is not an http(s) origin. */
export function normalizeOrigin(origin: string): string {
  return originUrl(origin).origin;
}

/** An origin parsed, once; throws on what is not an http(s) origin. */
function originUrl(origin: string): URL {
  const url = new URL(origin);
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username !== '' || url.password !== '' || (url.pathname !== '/' && url.pathname !== '')) {
    throw new Error(`not an http(s) origin: ${origin}`);
  }
  return url;
}

/** `name:port` of a Host header as a URL writes it (no default port, lower case); undefined when it is not one. */
function hostOf(host: string): string | undefined {
  try {
    return new URL(`http://${host}`).host;
  } catch {
    return undefined;
  }
}

/** The host name of a Host header (`name:port`, `[v6]:port`), lower case, without a final dot (`localhost.`). */
function hostnameOf(host: string): string {
  try {
    return new URL(`http://${host}`).hostname.replace(/\.$/, '');
  } catch {
    return host.toLowerCase();
  }
}
