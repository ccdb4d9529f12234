import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { CapsError } from './errors.js';
import { nameSchema, orderSchema, storeNameSchema } from './schemas.js';

/**
 * CAPS tokens: `base64url(JSON claims).base64url(HMAC-SHA256(secret, first part))`.
 * A token names a role and, for a vendor, its store; the hub takes identity from it, never from
 * a payload. Minted by `caps token` with the hub's secret. A `tracker` token is a customer's
 * tracking link: it names one parcel and may only watch it.
 */
export const ROLES = ['vendor', 'driver', 'dashboard', 'tracker'] as const;
export type Role = (typeof ROLES)[number];

/** Every token's bookkeeping: when it was minted and expires, the id of its key, and its own id (to revoke it). */
const bookkeeping = {
  v: z.literal(1),
  iat: z.number().int(),
  exp: z.number().int().optional(),
  kid: z.string().regex(/^[A-Za-z0-9_-]{8}$/).optional(),
  jti: z.string().regex(/^[a-f0-9]{16}$/).optional(),
};

export const claimsSchema = z.discriminatedUnion('role', [
  z.strictObject({ ...bookkeeping, role: z.literal('vendor'), store: storeNameSchema }),
  z.strictObject({ ...bookkeeping, role: z.literal('driver'), name: nameSchema }),
  z.strictObject({ ...bookkeeping, role: z.literal('dashboard'), store: storeNameSchema.optional() }),
  z.strictObject({ ...bookkeeping, role: z.literal('tracker'), store: storeNameSchema, orderId: orderSchema.shape.orderId }),
]);
export type TokenClaims = z.infer<typeof claimsSchema>;

export type TokenSubject =
  | { role: 'vendor'; store: string }
  | { role: 'driver'; name: string }
  | { role: 'dashboard'; store?: string }
  | { role: 'tracker'; store: string; orderId: string };

/** Who a verified token names, without its bookkeeping (version, times). */
export function subjectOf(claims: TokenClaims): TokenSubject {
  switch (claims.role) {
    case 'vendor':
      return { role: 'vendor', store: claims.store };
    case 'driver':
      return { role: 'driver', name: claims.name };
    case 'dashboard':
      return claims.store !== undefined ? { role: 'dashboard', store: claims.store } : { role: 'dashboard' };
    case 'tracker':
      return { role: 'tracker', store: claims.store, orderId: claims.orderId };
  }
}

/** Longest token the hub will look at: anything longer is refused unread. */
const MAX_TOKEN_LENGTH = 2_048;

/** A key's id: the first 8 characters of the base64url SHA-256 of its secret (names it, reveals nothing). */
export function keyId(secret: string): string {
  return createHash('sha256').update(secret).digest('base64url').slice(0, 8);
}

/** Signs a token with `secret`, naming its key id and an id of its own (to revoke it by). */
export function signToken(secret: string, subject: TokenSubject, options: { expiresInSeconds?: number; now?: number } = {}): string {
  const iat = Math.floor((options.now ?? Date.now()) / 1000);
  const claims = {
    v: 1,
    ...subject,
    iat,
    ...(options.expiresInSeconds !== undefined ? { exp: iat + options.expiresInSeconds } : {}),
    kid: keyId(secret),
    jti: randomBytes(8).toString('hex'),
  };
  const body = Buffer.from(JSON.stringify(claims)).toString('base64url');
  return `${body}.${mac(secret, body)}`;
}

/** Checks signature and expiry; throws CapsError `CAPS_ERR_UNAUTHORIZED` or `CAPS_ERR_TOKEN_EXPIRED`. */
export function verifyToken(secret: string, token: unknown, now = Date.now()): TokenClaims {
  if (typeof token !== 'string' || token.length === 0) throw new CapsError('CAPS_ERR_UNAUTHORIZED', 'a token is required: auth: { token }');
  if (token.length > MAX_TOKEN_LENGTH) throw new CapsError('CAPS_ERR_UNAUTHORIZED', 'the token is too long');
  const [body, signature, extra] = token.split('.');
  if (!body || !signature || extra !== undefined) throw new CapsError('CAPS_ERR_UNAUTHORIZED', 'the token is malformed');
  const expected = Buffer.from(mac(secret, body));
  const given = Buffer.from(signature);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) {
    throw new CapsError('CAPS_ERR_UNAUTHORIZED', 'the token signature does not match (tampered, or signed with another secret)');
  }
  const claims = decodeClaims(body);
  if (!claims) throw new CapsError('CAPS_ERR_UNAUTHORIZED', 'the token claims are malformed');
  if (claims.exp !== undefined && claims.exp * 1000 <= now) {
    throw new CapsError('CAPS_ERR_TOKEN_EXPIRED', `the token expired at ${new Date(claims.exp * 1000).toISOString()}`);
  }
  return claims;
}

/** Reads a token's claims without checking it: clients use it to learn their own store or name. */
export function peekClaims(token: string): TokenClaims | undefined {
  const [body] = token.split('.');
  return body ? decodeClaims(body) : undefined;
}

function decodeClaims(body: string): TokenClaims | undefined {
  try {
    const parsed = claimsSchema.safeParse(JSON.parse(Buffer.from(body, 'base64url').toString('utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

function mac(secret: string, body: string): string {
  return createHmac('sha256', secret).update(body).digest('base64url');
}
