// A chat POST's answer exactly as sent, for tests that compare answers byte for byte.
import { request } from 'node:http';

/** A chat POST's raw answer on a fresh connection: the status, every header as sent but the date, a blank line, the body. */
export function rawChatAnswer(base: string, body: unknown, headers: Record<string, string>): Promise<string> {
  return rawAnswer(base, '/chat/completions', body, headers);
}

/** The same for a POST to any route under `base`. */
export function rawAnswer(base: string, path: string, body: unknown, headers: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const sent = request(`${base}${path}`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', ...headers } }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        const lines = [String(response.statusCode)];
        for (let i = 0; i < response.rawHeaders.length; i += 2)
          if (response.rawHeaders[i]!.toLowerCase() !== 'date') lines.push(`${response.rawHeaders[i]}: ${response.rawHeaders[i + 1]}`);
        resolve(`${lines.join('\n')}\n\n${Buffer.concat(chunks).toString('utf8')}`);
      });
      response.on('error', reject);
    });
    sent.on('error', reject);
    sent.end(JSON.stringify(body));
  });
}
