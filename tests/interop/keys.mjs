// Private keys for token-mgmt's private_key_jwt interop tests, made by node's crypto (an
// implementation independent of the one under test), in every encoding the library reads.
//
//   node keys.mjs   ->  one JSON object on stdout:
//   { "<kind>": { "pkcs8": PEM, "traditional": PEM | null, "jwk": private JWK, "public": PEM } }
//
// kinds: rsa (2048 bits), p256, p384, ed25519. `traditional` is PKCS#1 for RSA, SEC1 for EC.
import { generateKeyPairSync } from 'node:crypto';

const kinds = {
  rsa: ['rsa', { modulusLength: 2048 }, 'pkcs1'],
  p256: ['ec', { namedCurve: 'P-256' }, 'sec1'],
  p384: ['ec', { namedCurve: 'P-384' }, 'sec1'],
  ed25519: ['ed25519', {}, null],
};

const out = {};
for (const [name, [type, options, traditional]] of Object.entries(kinds)) {
  const { privateKey, publicKey } = generateKeyPairSync(type, options);
  out[name] = {
    pkcs8: privateKey.export({ type: 'pkcs8', format: 'pem' }),
    traditional: traditional ? privateKey.export({ type: traditional, format: 'pem' }) : null,
    jwk: privateKey.export({ format: 'jwk' }),
    public: publicKey.export({ type: 'spki', format: 'pem' }),
  };
}
process.stdout.write(`${JSON.stringify(out)}\n`);
