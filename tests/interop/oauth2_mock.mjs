// A second identity provider for Postern: oauth2-mock-server (npm, pinned in package.json).
// It checks PKCE (S256) on the authorization-code grant, issues JWT access tokens and a
// refresh token on every grant but client credentials. Prints `issuer URL` once listening
// on 127.0.0.1, then runs until SIGTERM.
import { OAuth2Server } from 'oauth2-mock-server';

const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
await server.start(0, '127.0.0.1');
console.log(`issuer ${server.issuer.url.replace('localhost', '127.0.0.1')}`);
const stop = async () => {
  await server.stop();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
