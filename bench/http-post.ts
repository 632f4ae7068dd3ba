// A POST of a JSON body to a server on 127.0.0.1, the whole answer collected, each chunk shown to onData
// as it arrives (time to first token). node:http rather than fetch: on 2 cores the client shares the
// cores with the servers, and a plain 'data' listener costs far less per chunk than web streams.
import { type Agent, request as httpRequest } from 'node:http';

export function postJson(agent: Agent, port: number, path: string, body: unknown, onData?: (chunk: Buffer) => void): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest({ host: '127.0.0.1', port, path, method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => {
        onData?.(chunk);
        chunks.push(chunk);
      });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(JSON.stringify(body));
  });
}
