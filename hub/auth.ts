import { CapsError } from '../protocol/errors.js';
import { subjectOf } from '../protocol/token.js';
import type { Keyring } from './keyring.js';
import type { Expiring, TokenExpiry } from './expiry.js';
import type { Logger } from './logger.js';
import type { ConnectionRefusals } from './refusals.js';
import type { CapsSocket } from './types.js';

export interface AuthOptions {
  /** The token keys and revocations; undefined: a hub with no secret (lab mode only). */
  keyring: Keyring | undefined;
  allowAnonymous: boolean;
  logger: Logger;
  refusals: ConnectionRefusals;
}

/** Once connected: a token is good until it expires, not for as long as the connection lasts. */
export function trackExpiry(socket: CapsSocket, expiry: TokenExpiry<Expiring>, logger: Logger): void {
  const at = socket.data.expiresAt;
  if (at === undefined) return;
  const tracked: Expiring = {
    expire: () => {
      logger.info('TOKEN EXPIRED', { socket: socket.id, role: socket.data.role });
      socket.disconnect(true);
    },
  };
  expiry.track(tracked, at);
  socket.once('disconnect', () => expiry.forget(tracked));
}

/**
 * Namespace middleware: checks `auth.token` from the handshake. A refused connection gets
 * `connect_error` with `err.data = { code, message }`. In open lab mode a client without a token
 * is let in anonymously; a token it does send must still be valid.
 */
export function authenticate(options: AuthOptions) {
  return (socket: CapsSocket, next: (err?: Error) => void): void => {
    const auth: unknown = socket.handshake.auth;
    const token = auth !== null && typeof auth === 'object' ? (auth as Record<string, unknown>)['token'] : undefined;
    if (token === undefined && options.allowAnonymous) {
      next();
      return;
    }
    try {
      if (!options.keyring) throw new CapsError('CAPS_ERR_UNAUTHORIZED', 'this hub has no secret and accepts no tokens');
      const { claims, kid } = options.keyring.verifyWithKey(token);
      socket.data.auth = subjectOf(claims);
      // what a revocation or the end of a key's grace period is checked against, while connected:
      // the key that verified it, whether or not the token names one (older tokens do not)
      if (claims.jti !== undefined) socket.data.tokenId = claims.jti;
      socket.data.keyId = kid;
      // tracked once connected (trackExpiry): a connection refused by a later check never is
      if (claims.exp !== undefined) socket.data.expiresAt = claims.exp * 1000;
      next();
    } catch (err) {
      const capsError = err instanceof CapsError ? err : new CapsError('CAPS_ERR_UNAUTHORIZED', undefined, { cause: err });
      const refusal = options.refusals.refuse(socket, capsError);
      next(refusal);
    }
  };
}
