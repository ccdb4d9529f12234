import type { LookupAddress, LookupAllOptions, LookupOptions } from 'node:dns';
import { lookup as dnsLookup } from 'node:dns';
import { isIP } from 'node:net';

/**
 * The SSRF guard. A store names the URL, the hub makes the request: without a guard a store could
 * have the hub POST to its own loopback, to a cloud metadata service (169.254.169.254) or to a
 * private network behind it. Addresses in these ranges are refused unless the hub runs with
 * `--webhook-allow-private`: at registration (the URL's host, resolved) and again at every delivery,
 * on the address the request really connects to (`guardedLookup`), so a name that resolved to a
 * public address at registration and to a private one later (DNS rebinding) is still refused.
 */

/** Why an address may not be a webhook's target: `loopback`, `private (RFC 1918)`...; undefined when it may. */
export function forbiddenReason(address: string): string | undefined {
  const kind = isIP(address);
  if (kind === 4) return forbiddenV4(parseV4(address));
  if (kind === 6) return forbiddenV6(parseV6(address));
  return 'not an IP address';
}

function forbiddenV4(b: readonly number[]): string | undefined {
  const [a = 0, c = 0] = b;
  if (a === 0) return 'unspecified (0.0.0.0/8)';
  if (a === 127) return 'loopback (127.0.0.0/8)';
  if (a === 10 || (a === 172 && c >= 16 && c <= 31) || (a === 192 && c === 168)) return 'private (RFC 1918)';
  if (a === 169 && c === 254) return 'link-local (169.254.0.0/16)';
  if (a === 100 && c >= 64 && c <= 127) return 'shared address space (CGNAT 100.64.0.0/10)';
  if (a >= 224 && a <= 239) return 'multicast (224.0.0.0/4)';
  if (a === 198 && (c === 18 || c === 19)) return 'benchmarking (198.18.0.0/15)';
  if (a === 192 && c === 0 && b[2] === 0) return 'IETF protocol assignments (192.0.0.0/24)';
  // reserved for future use, and the broadcast address: nothing a webhook lives on
  if (a >= 240) return 'reserved (240.0.0.0/4)';
  return undefined;
}

function forbiddenV6(b: readonly number[]): string | undefined {
  const zeroUpTo = (n: number): boolean => b.slice(0, n).every((x) => x === 0);
  if (zeroUpTo(16)) return 'unspecified (::)';
  if (zeroUpTo(15) && b[15] === 1) return 'loopback (::1)';
  // ::ffff:a.b.c.d (IPv4-mapped) and ::a.b.c.d (IPv4-compatible, deprecated) reach the IPv4 address they carry
  if (zeroUpTo(10) && b[10] === 0xff && b[11] === 0xff) return mapped(b);
  if (zeroUpTo(12)) return mapped(b);
  const [first = 0, second = 0] = b;
  // NAT64 (64:ff9b::/96, and the local-use 64:ff9b:1::/48) and 6to4 (2002::/16) reach the IPv4
  // address they carry, through a gateway that may well be there
  if (first === 0x00 && second === 0x64 && b[2] === 0xff && b[3] === 0x9b) return mapped(b, 'NAT64');
  if (first === 0x20 && second === 0x02) return mapped([...new Array<number>(12).fill(0), ...b.slice(2, 6)], '6to4');
  if (first === 0xfe && (second & 0xc0) === 0x80) return 'link-local (fe80::/10)';
  if ((first & 0xfe) === 0xfc) return 'unique local (fc00::/7)';
  if (first === 0xfe && (second & 0xc0) === 0xc0) return 'site-local (fec0::/10, deprecated)';
  if (first === 0xff) return 'multicast (ff00::/8)';
  return undefined;
}

/** The verdict on the IPv4 address in the last 4 of these 16 bytes, said as reached `how`. */
function mapped(b: readonly number[], how = 'IPv4-mapped'): string | undefined {
  const reason = forbiddenV4(b.slice(12));
  return reason === undefined ? undefined : `${reason}, ${how}`;
}

function parseV4(address: string): number[] {
  return address.split('.').map(Number);
}

/** The 16 bytes of an IPv6 address `isIP` accepted (`::`, a dotted IPv4 tail, a `%zone`). */
function parseV6(address: string): number[] {
  const text = address.split('%')[0] ?? '';
  const [head = '', tail] = text.split('::');
  const groups = (part: string | undefined): number[] => {
    if (part === undefined || part === '') return [];
    const out: number[] = [];
    for (const group of part.split(':')) {
      if (group.includes('.')) {
        const [a = 0, b = 0, c = 0, d = 0] = parseV4(group);
        out.push((a << 8) | b, (c << 8) | d);
      } else out.push(parseInt(group, 16));
    }
    return out;
  };
  const left = groups(head);
  const right = groups(tail);
  const words = tail === undefined ? left : [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  return words.flatMap((w) => [w >> 8, w & 0xff]);
}

/** Why a webhook URL is refused before any address is looked at (scheme, credentials); undefined when its form is fine. */
function urlProblem(url: string): string | undefined {
  if (!URL.canParse(url)) return `'${url}' is not a URL`;
  const parsed = new URL(url);
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return `a webhook URL must be http: or https:, not ${parsed.protocol}`;
  if (parsed.username !== '' || parsed.password !== '') return 'a webhook URL must not carry a user name or password: the signature says who is calling';
  return undefined;
}

/** The host of a URL as `isIP` reads it: IPv6 literals lose their brackets. */
export function hostOf(url: URL): string {
  return url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
}

/**
 * Checks where a webhook URL leads, at registration: its host, or every address its name resolves
 * to, must be public (unless `allowPrivate`). Resolves with the reason it is refused, or undefined.
 */
export async function destinationProblem(url: string, allowPrivate: boolean, lookup: typeof dnsLookup = dnsLookup): Promise<string | undefined> {
  const form = urlProblem(url);
  if (form !== undefined || allowPrivate) return form;
  const host = hostOf(new URL(url));
  if (isIP(host) !== 0) {
    const reason = forbiddenReason(host);
    return reason === undefined ? undefined : `${host} is ${reason}: the hub does not send webhooks there (a hub started with --webhook-allow-private does)`;
  }
  let addresses: LookupAddress[];
  try {
    addresses = await new Promise<LookupAddress[]>((resolve, reject) => lookup(host, { all: true }, (err, found) => (err ? reject(err) : resolve(found))));
  } catch (err) {
    return `${host} does not resolve (${(err as NodeJS.ErrnoException).code ?? String(err)})`;
  }
  for (const { address } of addresses) {
    const reason = forbiddenReason(address);
    if (reason !== undefined) return `${host} resolves to ${address}, ${reason}: the hub does not send webhooks there (a hub started with --webhook-allow-private does)`;
  }
  return undefined;
}

/** The error a delivery fails with when its host leads somewhere refused. */
export class ForbiddenDestinationError extends Error {
  override readonly name = 'ForbiddenDestinationError';
  readonly code = 'CAPS_WEBHOOK_FORBIDDEN_ADDRESS';
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for http.request: resolves as dns.lookup does, then refuses the lot if any address is
 * in a forbidden range, so the socket never connects there. Honours `all` (Node's happy-eyeballs
 * connect asks for every address).
 */
export function guardedLookup(lookup: typeof dnsLookup = dnsLookup) {
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    const all: LookupAllOptions = { ...options, all: true };
    lookup(hostname, all, (err, addresses) => {
      if (err) return callback(err, []);
      for (const { address } of addresses) {
        const reason = forbiddenReason(address);
        if (reason !== undefined) return callback(new ForbiddenDestinationError(`${hostname} resolves to ${address}, ${reason}`), []);
      }
      const first = addresses[0];
      if (options.all) return callback(null, addresses);
      if (!first) return callback(Object.assign(new Error(`${hostname} resolves to no address`), { code: 'ENOTFOUND' }), []);
      callback(null, first.address, first.family);
    });
  };
}
