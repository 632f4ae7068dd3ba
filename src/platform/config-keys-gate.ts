// The gate for a server with no key store: accepts the keys from the config file / INFERA_API_KEY,
// or, with none configured, anyone on loopback. No limits, no ledger.
import { timingSafeEqual, createHash } from 'node:crypto';
import { InferaError } from '../errors/index.ts';
import type { Admission, AdmissionRequest, Gate, Principal } from './gate.ts';

export const isLoopback = (address: string): boolean =>
  address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');

const digest = (secret: string) => createHash('sha256').update(secret).digest();

export const unauthorized = (message: string) =>
  new InferaError({ status: 401, code: 'invalid_api_key', message, headers: { 'www-authenticate': 'Bearer' } });

export class ConfigKeysGate implements Gate {
  private readonly digests: Buffer[];

  constructor(keys: string[]) {
    this.digests = keys.map(digest);
  }

  get open(): boolean {
    return this.digests.length === 0;
  }

  async authenticate(secret: string | undefined, remoteAddress: string): Promise<Principal> {
    if (this.open) {
      if (isLoopback(remoteAddress)) return { accountId: 'default', keyId: 'anonymous', keyName: 'anonymous' };
      throw unauthorized('This server has no API key configured and only answers on loopback. Set INFERA_API_KEY.');
    }
    if (!secret) throw unauthorized('Missing API key: send "Authorization: Bearer <key>".');
    const candidate = digest(secret);
    // Compare against every key so timing does not tell which prefix matched.
    let match = false;
    for (const known of this.digests) match = timingSafeEqual(known, candidate) || match;
    if (!match) throw unauthorized('Invalid API key.');
    return { accountId: 'default', keyId: 'config', keyName: 'config' };
  }

  async admit(_request: AdmissionRequest): Promise<Admission> {
    return { headers: {}, settle: async () => undefined };
  }

  async userInfo(principal: Principal): Promise<Record<string, unknown>> {
    return {
      id: principal.accountId,
      name: principal.keyName,
      image: '',
      email: '',
      isAdmin: false,
      balance: '0.00',
      status: 'normal',
      introduction: '',
      role: '',
      chargeBalance: '0.00',
      totalBalance: '0.00',
    };
  }

  async close(): Promise<void> {}
}
