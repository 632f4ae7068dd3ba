// API key secrets. A secret is 32 random bytes (256 bits), so a plain sha256 of it is enough to store:
// slow password hashes (bcrypt, argon2) exist to stretch low-entropy human passwords, and brute-forcing
// a 256-bit random secret from its sha256 is infeasible; a slow hash would only add milliseconds to
// every request. Lookups go by hash, then the hashes are compared with timingSafeEqual.
import { hash, randomBytes, timingSafeEqual } from 'node:crypto';

// crypto.hash: the one-shot form, several times cheaper per call than createHash().update().digest().
export const hashSecret = (secret: string): string => hash('sha256', secret, 'hex');

/** "sk-" + 43 base64url characters. */
export const generateSecret = (): string => `sk-${randomBytes(32).toString('base64url')}`;

export const generateKeyId = (): string => `key_${randomBytes(9).toString('base64url').replace(/[-_]/g, 'x')}`;

/** What lists show: enough to recognise a key, far too little to use it. */
export const secretPrefix = (secret: string): string => `${secret.slice(0, 7)}…${secret.slice(-4)}`;

/** Constant-time equality of two hex digests. */
export function sameHash(a: string, b: string): boolean {
  const left = Buffer.from(a, 'hex');
  const right = Buffer.from(b, 'hex');
  return left.length === right.length && timingSafeEqual(left, right);
}

export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const plain = address.startsWith('::ffff:') ? address.slice(7) : address;
  return plain === '::1' || plain === 'localhost' || /^127\.\d+\.\d+\.\d+$/.test(plain);
}
