// An OAuth 2.0 authorization server for token-mgmt's interop tests: the OpenID-certified
// `oidc-provider` (pinned in package.json), configured from a JSON file the Rust test writes.
//
//   node server.mjs CONFIG.json
//
// CONFIG: { "clients": [oidc-provider client metadata...],
//           "resources": { "<resource indicator>": "<space-separated scopes>" },
//           "scopes": ["..."],
//           "tls": null | { "key": PEM, "cert": PEM, "ca": PEM },
//           "dpop_require_nonce": ["<client id whose DPoP proofs must carry a server nonce>"],
//           "dpop_signing_algs": null | ["ES256", ...] }
//
// A client may carry `"jwks_pem": [{ "kid": "...", "pem": PEM }]`: public keys or certificates in
// PEM, turned into its `jwks` here (certificates with `x5c`, for self_signed_tls_client_auth).
//
// With `tls` the server speaks https, asks for a client certificate (RFC 8705 mTLS) and trusts client
// certificates issued by `ca` (tls_client_auth); self-signed ones are checked against the client's
// registered JWKS by oidc-provider (self_signed_tls_client_auth).
//
// DPoP (RFC 9449) is on: a client with `dpop_bound_access_tokens: true` gets tokens only with a
// proof; every response to a proof carries a `DPoP-Nonce`, and the clients listed in
// `dpop_require_nonce` must send it. `GET /test/counts` answers how many token requests came in.
//
// Listens on 127.0.0.1 at an OS-assigned port and prints one JSON line on stdout:
// {"issuer": "...", "token_endpoint": "..."}. Exits when stdin closes (the test dropped its handle).
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import {
  X509Certificate, createHash, createPublicKey, generateKeyPairSync, randomBytes,
} from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const tls = config.tls ?? null;
const requireNonce = new Set(config.dpop_require_nonce ?? []);

// The signing key of JWT access tokens; fresh per run.
const signingKey = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  .privateKey.export({ format: 'jwk' });
signingKey.kid = 'interop-signing-key';
signingKey.alg = 'ES256';
signingKey.use = 'sig';

function peerCertificate(ctx) {
  const socket = ctx.req.socket;
  return typeof socket.getPeerX509Certificate === 'function'
    ? socket.getPeerX509Certificate()
    : undefined;
}

function jwk({ kid, pem }) {
  if (pem.includes('BEGIN CERTIFICATE')) {
    const certificate = new X509Certificate(pem);
    return {
      ...certificate.publicKey.export({ format: 'jwk' }),
      kid,
      x5c: [certificate.raw.toString('base64')],
      'x5t#S256': createHash('sha256').update(certificate.raw).digest('base64url'),
    };
  }
  return { ...createPublicKey(pem).export({ format: 'jwk' }), kid };
}

const clients = config.clients.map(({ jwks_pem: pems, ...client }) => (
  pems ? { ...client, jwks: { keys: pems.map(jwk) } } : client
));

// Distinguished names as `CN=a,O=b` (node separates the attributes with newlines).
const dn = (value) => value.split('\n').join(',');

function configuration() {
  return {
    clients,
    // Machine-to-machine clients: only the client credentials grant; ID tokens (never issued here)
    // signed with the one key we have.
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      id_token_signed_response_alg: 'ES256',
    },
    jwks: { keys: [signingKey] },
    scopes: config.scopes ?? [],
    clientAuthMethods: [
      'none',
      'client_secret_basic',
      'client_secret_post',
      'client_secret_jwt',
      'private_key_jwt',
      // Offered only when the server speaks TLS (oidc-provider refuses them otherwise).
      ...(tls === null ? [] : ['tls_client_auth', 'self_signed_tls_client_auth']),
    ],
    enabledJWA: {
      clientAuthSigningAlgValues: [
        'HS256', 'HS384', 'HS512', 'RS256', 'PS256', 'ES256', 'ES384', 'Ed25519', 'EdDSA',
      ],
      dPoPSigningAlgValues: config.dpop_signing_algs
        ?? ['RS256', 'PS256', 'ES256', 'ES384', 'Ed25519', 'EdDSA'],
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      dPoP: {
        enabled: true,
        nonceSecret: randomBytes(32),
        requireNonce: (ctx) => requireNonce.has(ctx.oidc?.client?.clientId),
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo(ctx, resourceIndicator) {
          const scope = (config.resources ?? {})[resourceIndicator];
          if (scope === undefined) {
            throw new errors.InvalidTarget();
          }
          return {
            scope,
            audience: resourceIndicator,
            accessTokenFormat: 'jwt',
            accessTokenTTL: 300,
            jwt: { sign: { alg: 'ES256' } },
          };
        },
      },
      mTLS: {
        enabled: tls !== null,
        certificateBoundAccessTokens: tls !== null,
        tlsClientAuth: tls !== null,
        selfSignedTlsClientAuth: tls !== null,
        getCertificate: (ctx) => peerCertificate(ctx),
        certificateAuthorized: (ctx) => ctx.req.socket.authorized === true,
        certificateSubjectMatches(ctx, property, expected) {
          const certificate = peerCertificate(ctx);
          if (!certificate) return false;
          switch (property) {
            case 'tls_client_auth_subject_dn':
              return dn(certificate.subject) === expected;
            case 'tls_client_auth_san_dns':
              return (certificate.subjectAltName ?? '').split(', ').includes(`DNS:${expected}`);
            default:
              return false;
          }
        },
      },
    },
  };
}

const server = tls === null
  ? createHttpServer()
  : createHttpsServer({
    key: tls.key,
    cert: tls.cert,
    ca: tls.ca,
    requestCert: true,
    // Unverified (self-signed) certificates reach oidc-provider, which decides per client.
    rejectUnauthorized: false,
  });

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `${tls === null ? 'http' : 'https'}://127.0.0.1:${port}`;
  const provider = new Provider(issuer, configuration());
  provider.on('server_error', (ctx, error) => console.error('server_error', error));
  const callback = provider.callback();
  const counts = { token_requests: 0 };
  server.on('request', (req, res) => {
    if (req.url === '/test/counts') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(counts));
      return;
    }
    if (req.url.startsWith('/token')) counts.token_requests += 1;
    callback(req, res);
  });
  process.stdout.write(`${JSON.stringify({ issuer, token_endpoint: `${issuer}/token` })}\n`);
});

// The test holds our stdin; when it goes away, so do we.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
