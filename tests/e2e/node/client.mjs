// The TypeScript SDK's MCP client with its OAuth support, driven headless by the Python harness.
// Usage: node client.mjs SERVER_URL REDIRECT_URL [CLIENT_METADATA_URL]
// Reads one JSON command per line on stdin, answers one JSON line on stdout:
//   {"op":"call_tool","name":..,"args":..} -> {"ok":true,"text":..} | {"ok":false,"error":..}
//   {"op":"tokens"}                        -> {"refresh_token":..}
// When the SDK wants the user to authorize, the script prints {"event":"authorize","url":..}
// and waits for {"callback": REDIRECT_URL?code=..} (the harness plays the browser).
// Registration and tokens live in this process's memory for its whole life.
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

const [serverUrl, redirectUrl, clientMetadataUrl] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const send = (msg) => process.stdout.write(JSON.stringify(msg) + '\n');

class HeadlessProvider {
  constructor() {
    this.saved = {};
    this.callback = null;
    // With a client ID metadata document URL, the SDK uses it as client_id and skips registration.
    if (clientMetadataUrl) this.clientMetadataUrl = clientMetadataUrl;
  }
  get redirectUrl() { return redirectUrl; }
  get clientMetadata() {
    return {
      client_name: 'e2e typescript client',
      redirect_uris: [redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  state() { return (this.saved.state = randomBytes(16).toString('hex')); }
  clientInformation() { return this.saved.client; }
  saveClientInformation(info) { this.saved.client = info; }
  tokens() { return this.saved.tokens; }
  saveTokens(tokens) { this.saved.tokens = tokens; }
  saveCodeVerifier(v) { this.saved.verifier = v; }
  codeVerifier() { return this.saved.verifier; }
  saveDiscoveryState(s) { this.saved.discovery = s; }
  discoveryState() { return this.saved.discovery; }
  invalidateCredentials(scope) {
    if (scope === 'all' || scope === 'client') delete this.saved.client;
    if (scope === 'all' || scope === 'tokens') delete this.saved.tokens;
    if (scope === 'all' || scope === 'verifier') delete this.saved.verifier;
    if (scope === 'all' || scope === 'discovery') delete this.saved.discovery;
  }
  async redirectToAuthorization(url) {
    send({ event: 'authorize', url: url.toString() });
    const reply = JSON.parse((await lines.next()).value);
    this.callback = new URL(reply.callback);
  }
  // The code from the last redirect, after the checks the SDK leaves to the application.
  takeCode() {
    const q = this.callback.searchParams;
    this.callback = null;
    if (!q.get('code')) throw new Error(`authorization refused: ${q.get('error')}`);
    if (q.get('state') !== this.saved.state) throw new Error('state mismatch');
    const issuer = this.saved.discovery?.authorizationServerMetadata?.issuer;
    if (q.get('iss') !== issuer) throw new Error(`iss ${q.get('iss')} is not ${issuer}`); // RFC 9207
    return q.get('code');
  }
}

const provider = new HeadlessProvider();

async function callTool(name, args) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const transport = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider });
    const client = new Client({ name: 'e2e-ts', version: '1.0.0' });
    try {
      await client.connect(transport);
      const result = await client.callTool({ name, arguments: args });
      await client.close();
      if (result.isError) throw new Error(JSON.stringify(result.content));
      return result.content[0].text;
    } catch (e) {
      // The SDK sent the user to authorize; finish with the code, then connect again.
      if (e instanceof UnauthorizedError && provider.callback && attempt === 0) {
        await transport.finishAuth(provider.takeCode());
        continue;
      }
      throw e;
    }
  }
}

for (;;) {
  const { value, done } = await lines.next();
  if (done) break;
  const cmd = JSON.parse(value);
  try {
    if (cmd.op === 'call_tool') send({ ok: true, text: await callTool(cmd.name, cmd.args) });
    else if (cmd.op === 'tokens') send({ refresh_token: provider.saved.tokens?.refresh_token ?? null });
    else send({ ok: false, error: `unknown op ${cmd.op}` });
  } catch (e) {
    send({ ok: false, error: String(e?.stack ?? e) });
  }
}
