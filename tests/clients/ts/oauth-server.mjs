// A real OAuth 2.1 authorization server and an MCP server it protects, for Switchboard's OAuth
// tests. The MCP side is the official TypeScript SDK's McpServer over its Streamable HTTP
// transport, behind a bearer check that answers as the MCP authorization spec says
// (WWW-Authenticate with resource_metadata and scope, 403 insufficient_scope). The
// authorization server is written out here so that each variant the tests need can be chosen:
// where the metadata lives, which discovery documents exist, registration on or off, client ID
// metadata documents, token endpoint auth methods, token lifetime, rotation, revocation, a wrong
// `resource`. The SDK's own router cannot do client_secret_basic or the path variants.
//
// Usage: node oauth-server.mjs '<json options>'. Prints one JSON line on stdout:
//   {"mcp": "<url of the MCP endpoint>", "issuer": "<issuer>", "admin": "<admin base url>"}
// Options (all optional):
//   prm: "path" | "root" | "none"      where protected-resource metadata is published
//   advertise: bool                     resource_metadata in WWW-Authenticate (default true)
//   as_metadata: "oauth" | "oidc" | "legacy"   legacy: no metadata anywhere, the 2025-03-26
//                                       default endpoints on the MCP server's origin
//   issuer_path: "/tenant"              the issuer's path (path-insertion discovery)
//   dcr: bool                           dynamic registration (default true)
//   cimd: bool                          client_id_metadata_document_supported
//   auth_methods: [...]                 token_endpoint_auth_methods_supported
//                                       (default ["client_secret_basic","client_secret_post","none"])
//   clients: [{client_id, client_secret?, auth_method?}]   preregistered clients
//   pkce: [...] | null                  code_challenge_methods_supported (null: omitted)
//   scopes_supported: [...]             in the AS and PR metadata
//   challenge_scope: "read"             scope in the 401 challenge
//   admin_scope: "admin"                what the admin_action tool needs (403 without it)
//   grant: [...]                        scopes the AS grants at most (default: what is asked)
//   token_ttl: seconds (default 3600)
//   rotate: bool                        refresh tokens are single use, a new one each time
//   wrong_resource: bool                PR metadata names another resource
//   deny: bool                          the "user" refuses: error=access_denied
//   iss: bool                           the callback carries RFC 9207 iss (default true)
//   prm_body: "garbage"                 the PR metadata is not JSON
//   issuer_mismatch: bool               the AS metadata names another issuer
// Admin (on the MCP server's origin): GET /admin/log, POST /admin/revoke-all,
// POST /admin/expire-all, POST /admin/down (authorization server answers 503 from then on).

import http from 'node:http';
import crypto from 'node:crypto';
import express from 'express';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import * as z from 'zod/v4';

const opts = JSON.parse(process.argv[2] || '{}');
const prm = opts.prm ?? 'path';
const advertise = opts.advertise ?? true;
const asMetadata = opts.as_metadata ?? 'oauth';
const issuerPath = opts.issuer_path ?? '';
const dcr = opts.dcr ?? true;
const authMethods = opts.auth_methods ?? ['client_secret_basic', 'client_secret_post', 'none'];
const pkce = opts.pkce === undefined ? ['S256'] : opts.pkce;
const tokenTtl = opts.token_ttl ?? 3600;
const adminScope = opts.admin_scope ?? 'admin';
// Without metadata there is nowhere to say that the callback carries iss (RFC 9207).
const withIss = (opts.iss ?? true) && asMetadata !== 'legacy';

const log = [];
const note = (kind, detail) => log.push({ kind, at: Date.now(), ...detail });
const rand = () => crypto.randomBytes(24).toString('base64url');

const clients = new Map(); // client_id -> {client_id, client_secret?, auth_method, redirect_uris?}
for (const c of opts.clients ?? []) {
  clients.set(c.client_id, { auth_method: c.client_secret ? authMethods[0] : 'none', ...c });
}
const codes = new Map(); // code -> {client_id, redirect_uri, challenge, resource, scopes}
const access = new Map(); // token -> {client_id, scopes, resource, expires, revoked}
const refresh = new Map(); // token -> {client_id, scopes, resource, used, revoked}
let down = false;

// Two listeners: the MCP server (with the admin routes) and the authorization server. In the
// legacy variant the authorization server's endpoints are on the MCP server's origin.
const mcpApp = express();
const asApp = asMetadata === 'legacy' ? mcpApp : express();
const mcpHttp = http.createServer(mcpApp);
const asHttp = asMetadata === 'legacy' ? mcpHttp : http.createServer(asApp);
await new Promise((r) => mcpHttp.listen(0, '127.0.0.1', r));
if (asHttp !== mcpHttp) await new Promise((r) => asHttp.listen(0, '127.0.0.1', r));
const mcpOrigin = `http://127.0.0.1:${mcpHttp.address().port}`;
const asOrigin = `http://127.0.0.1:${asHttp.address().port}`;
const mcpUrl = `${mcpOrigin}/mcp`;
const issuer = asMetadata === 'legacy' ? mcpOrigin : `${asOrigin}${issuerPath}`;
const resource = opts.wrong_resource ? `${mcpOrigin}/elsewhere` : mcpUrl;
const prmUrl =
  prm === 'root' ? `${mcpOrigin}/.well-known/oauth-protected-resource` : `${mcpOrigin}/.well-known/oauth-protected-resource/mcp`;
const endpoint = (path) => (asMetadata === 'legacy' ? `${mcpOrigin}${path}` : `${asOrigin}${issuerPath}${path}`);

asApp.use((req, res, next) => {
  if (down && !req.path.startsWith('/admin') && !req.path.startsWith('/mcp') && !req.path.includes('oauth-protected-resource')) {
    return res.status(503).json({ error: 'temporarily_unavailable' });
  }
  next();
});

// --- protected-resource metadata (RFC 9728)
if (prm !== 'none' && asMetadata !== 'legacy') {
  mcpApp.get(new URL(prmUrl).pathname, (req, res) => {
    note('prm', { path: req.path });
    if (opts.prm_body === 'garbage') return res.type('application/json').send('{"resource": not json');
    res.json({
      resource,
      authorization_servers: [issuer],
      ...(opts.scopes_supported ? { scopes_supported: opts.scopes_supported } : {}),
      bearer_methods_supported: ['header'],
    });
  });
}

// --- authorization-server metadata (RFC 8414 / OpenID discovery, path-insertion variants)
function asMetadataDoc() {
  return {
    issuer: opts.issuer_mismatch ? 'http://elsewhere.example' : issuer,
    authorization_endpoint: endpoint('/authorize'),
    token_endpoint: endpoint('/token'),
    ...(dcr ? { registration_endpoint: endpoint('/register') } : {}),
    revocation_endpoint: endpoint('/revoke'),
    response_types_supported: ['code'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_methods_supported: authMethods,
    ...(pkce === null ? {} : { code_challenge_methods_supported: pkce }),
    ...(opts.scopes_supported ? { scopes_supported: opts.scopes_supported } : {}),
    ...(opts.cimd ? { client_id_metadata_document_supported: true } : {}),
    ...(withIss ? { authorization_response_iss_parameter_supported: true } : {}),
  };
}
if (asMetadata === 'oauth') {
  const path = issuerPath ? `/.well-known/oauth-authorization-server${issuerPath}` : '/.well-known/oauth-authorization-server';
  asApp.get(path, (req, res) => {
    note('as_metadata', { path: req.path });
    res.json(asMetadataDoc());
  });
}
if (asMetadata === 'oidc') {
  // OpenID discovery, path inserted after the well-known prefix
  const path = issuerPath ? `/.well-known/openid-configuration${issuerPath}` : '/.well-known/openid-configuration';
  asApp.get(path, (req, res) => {
    note('as_metadata', { path: req.path });
    res.json({ ...asMetadataDoc(), jwks_uri: endpoint('/jwks'), subject_types_supported: ['public'], id_token_signing_alg_values_supported: ['RS256'] });
  });
}

// --- dynamic client registration (RFC 7591)
asApp.post(`${asMetadata === 'legacy' ? '' : issuerPath}/register`, express.json(), (req, res) => {
  if (!dcr) return res.status(404).json({ error: 'not_found' });
  const body = req.body ?? {};
  const asked = body.token_endpoint_auth_method ?? 'client_secret_basic';
  const method = authMethods.includes(asked) ? asked : authMethods[0];
  const client = {
    client_id: `dcr-${rand().slice(0, 12)}`,
    auth_method: method,
    redirect_uris: body.redirect_uris ?? [],
    ...(method === 'none' ? {} : { client_secret: rand() }),
  };
  clients.set(client.client_id, client);
  note('register', { asked, method, client_id: client.client_id, redirect_uris: client.redirect_uris, scope: body.scope ?? null });
  res.status(201).json({
    client_id: client.client_id,
    ...(client.client_secret ? { client_secret: client.client_secret, client_secret_expires_at: 0 } : {}),
    client_id_issued_at: Math.floor(Date.now() / 1000),
    redirect_uris: client.redirect_uris,
    token_endpoint_auth_method: method,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    client_name: body.client_name,
  });
});

function clientFor(id) {
  if (clients.has(id)) return clients.get(id);
  if (opts.cimd && /^https:\/\/[^/]+\/.+/.test(id ?? '')) {
    return { client_id: id, auth_method: 'none', metadata_document: true };
  }
  return undefined;
}

// --- authorization endpoint: the "user" approves at once (or refuses, with `deny`)
asApp.get(`${asMetadata === 'legacy' ? '' : issuerPath}/authorize`, (req, res) => {
  const q = req.query;
  note('authorize', { ...q });
  const client = clientFor(q.client_id);
  if (!client) return res.status(400).send(`unknown client ${q.client_id}`);
  if (client.redirect_uris?.length && !client.redirect_uris.includes(q.redirect_uri)) {
    return res.status(400).send('redirect_uri not registered');
  }
  const back = new URL(q.redirect_uri);
  if (q.state) back.searchParams.set('state', q.state);
  if (withIss) back.searchParams.set('iss', issuer);
  const refuse = (error, description) => {
    back.searchParams.set('error', error);
    back.searchParams.set('error_description', description);
    res.redirect(302, back.toString());
  };
  if (q.response_type !== 'code') return refuse('unsupported_response_type', 'code only');
  if (!q.code_challenge || q.code_challenge_method !== 'S256') return refuse('invalid_request', 'PKCE S256 required');
  if (q.resource !== mcpUrl && !opts.wrong_resource) return refuse('invalid_target', `resource must be ${mcpUrl}, got ${q.resource}`);
  if (opts.deny) return refuse('access_denied', 'the user said no');
  let scopes = (q.scope ?? '').split(' ').filter(Boolean);
  if (opts.grant) scopes = scopes.filter((s) => opts.grant.includes(s));
  const code = rand();
  codes.set(code, { client_id: client.client_id, redirect_uri: q.redirect_uri, challenge: q.code_challenge, resource: q.resource, scopes });
  back.searchParams.set('code', code);
  res.redirect(302, back.toString());
});

// --- token endpoint
function authenticate(req) {
  const header = req.headers.authorization;
  let id, secret, method;
  if (header?.startsWith('Basic ')) {
    const [u, p] = Buffer.from(header.slice(6), 'base64').toString().split(':');
    id = decodeURIComponent(u);
    secret = decodeURIComponent(p ?? '');
    method = 'client_secret_basic';
  } else if (req.body.client_secret) {
    id = req.body.client_id;
    secret = req.body.client_secret;
    method = 'client_secret_post';
  } else {
    id = req.body.client_id;
    method = 'none';
  }
  const client = clientFor(id);
  if (!client) return { error: 'invalid_client', method };
  if (!authMethods.includes(method)) return { error: 'invalid_client', method, why: `${method} not supported` };
  if (client.client_secret && client.client_secret !== secret) return { error: 'invalid_client', method, why: 'wrong secret' };
  if (client.client_secret && method === 'none') return { error: 'invalid_client', method, why: 'secret required' };
  return { client, method };
}

function issue(client_id, scopes, res_) {
  const token = rand();
  access.set(token, { client_id, scopes, resource: res_, expires: Date.now() + tokenTtl * 1000, revoked: false });
  const rt = rand();
  refresh.set(rt, { client_id, scopes, resource: res_, used: false, revoked: false });
  return { access_token: token, token_type: 'Bearer', expires_in: tokenTtl, refresh_token: rt, scope: scopes.join(' ') };
}

asApp.post(`${asMetadata === 'legacy' ? '' : issuerPath}/token`, express.urlencoded({ extended: false }), (req, res) => {
  const auth = authenticate(req);
  const b = req.body;
  note('token', { grant_type: b.grant_type, method: auth.method, client_id: auth.client?.client_id ?? null, resource: b.resource ?? null, scope: b.scope ?? null, error: auth.error ?? null });
  if (auth.error) return res.status(401).json({ error: auth.error, error_description: auth.why });
  if (b.resource !== mcpUrl && !opts.wrong_resource) return res.status(400).json({ error: 'invalid_target' });
  if (b.grant_type === 'authorization_code') {
    const c = codes.get(b.code);
    codes.delete(b.code);
    if (!c || c.client_id !== auth.client.client_id || c.redirect_uri !== b.redirect_uri) return res.status(400).json({ error: 'invalid_grant' });
    const digest = crypto.createHash('sha256').update(b.code_verifier ?? '').digest('base64url');
    if (digest !== c.challenge) return res.status(400).json({ error: 'invalid_grant', error_description: 'PKCE verification failed' });
    return res.json(issue(c.client_id, c.scopes, c.resource));
  }
  if (b.grant_type === 'refresh_token') {
    const r = refresh.get(b.refresh_token);
    if (!r || r.revoked || r.client_id !== auth.client.client_id || (opts.rotate && r.used)) {
      return res.status(400).json({ error: 'invalid_grant', error_description: 'refresh token unknown, used or revoked' });
    }
    r.used = true;
    if (opts.rotate) return res.json(issue(r.client_id, r.scopes, r.resource));
    const token = rand();
    access.set(token, { client_id: r.client_id, scopes: r.scopes, resource: r.resource, expires: Date.now() + tokenTtl * 1000, revoked: false });
    return res.json({ access_token: token, token_type: 'Bearer', expires_in: tokenTtl, scope: r.scopes.join(' ') });
  }
  res.status(400).json({ error: 'unsupported_grant_type' });
});

asApp.post(`${asMetadata === 'legacy' ? '' : issuerPath}/revoke`, express.urlencoded({ extended: false }), (req, res) => {
  const auth = authenticate(req);
  note('revoke', { method: auth.method, hint: req.body.token_type_hint ?? null, error: auth.error ?? null });
  for (const m of [access, refresh]) if (m.has(req.body.token)) m.get(req.body.token).revoked = true;
  res.status(200).end();
});

// --- admin, for the tests
mcpApp.get('/admin/log', (req, res) => res.json(log));
mcpApp.post('/admin/revoke-all', (req, res) => {
  for (const m of [access, refresh]) for (const t of m.values()) t.revoked = true;
  note('admin', { did: 'revoke-all' });
  res.json({ ok: true });
});
mcpApp.post('/admin/expire-all', (req, res) => {
  for (const t of access.values()) t.expires = 0;
  note('admin', { did: 'expire-all' });
  res.json({ ok: true });
});
mcpApp.post('/admin/down', (req, res) => {
  down = true;
  res.json({ ok: true });
});

// --- the protected MCP server
function challenge(error, description, scope) {
  let h = `Bearer error="${error}", error_description="${description}"`;
  if (scope) h += `, scope="${scope}"`;
  if (advertise && prm !== 'none' && asMetadata !== 'legacy') h += `, resource_metadata="${prmUrl}"`;
  return h;
}

function server(info) {
  const s = new McpServer({ name: 'oauth-protected', version: '1.0.0' });
  s.registerTool('whoami', { description: 'Who the token is for', inputSchema: {} }, async () => ({
    content: [{ type: 'text', text: JSON.stringify({ client_id: info.client_id, scopes: info.scopes }) }],
  }));
  s.registerTool('admin_action', { description: `Needs the ${adminScope} scope`, inputSchema: { what: z.string().optional() } }, async () => ({
    content: [{ type: 'text', text: 'done' }],
  }));
  return s;
}

mcpApp.all('/mcp', express.json(), async (req, res) => {
  const header = req.headers.authorization ?? '';
  const token = header.startsWith('Bearer ') ? header.slice(7) : null;
  const info = token ? access.get(token) : undefined;
  const method = req.body?.method ?? req.method;
  note('mcp', { method, tool: req.body?.params?.name ?? null, token: token ? token.slice(0, 6) : null });
  if (!token) {
    res.set('WWW-Authenticate', challenge('invalid_token', 'Missing Authorization header', opts.challenge_scope));
    return res.status(401).json({ error: 'invalid_token' });
  }
  if (!info || info.revoked || info.expires < Date.now() || info.resource !== mcpUrl) {
    const why = !info ? 'unknown token' : info.revoked ? 'revoked' : info.expires < Date.now() ? 'expired' : 'wrong resource';
    note('mcp_refused', { why });
    res.set('WWW-Authenticate', challenge('invalid_token', `Token ${why}`, opts.challenge_scope));
    return res.status(401).json({ error: 'invalid_token' });
  }
  if (req.body?.method === 'tools/call' && req.body?.params?.name === 'admin_action' && !info.scopes.includes(adminScope)) {
    const needed = [...new Set([...info.scopes, adminScope])].join(' ');
    res.set('WWW-Authenticate', challenge('insufficient_scope', `Needs ${adminScope}`, needed));
    return res.status(403).json({ error: 'insufficient_scope' });
  }
  if (req.method !== 'POST') return res.status(405).set('Allow', 'POST').end();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  const s = server(info);
  res.on('close', () => {
    transport.close();
    s.close();
  });
  await s.connect(transport);
  await transport.handleRequest(req, res, req.body);
});

process.stdout.write(JSON.stringify({ mcp: mcpUrl, issuer, admin: mcpOrigin, as: asOrigin }) + '\n');
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
