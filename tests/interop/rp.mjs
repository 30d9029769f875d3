// A relying party written with openid-client (Node.js), not with Authlib as UEOZ is: it
// knows UEOZ's issuer URL and its own registration, and finds everything else by discovery.
// tests/browser/test_interop.py registers it, starts it and drives a browser through it.
//
//   node rp.mjs --issuer URL --client-id ID --port PORT
//   env RP_CLIENT_SECRET=...      client_secret_basic, or
//   env RP_PRIVATE_JWK=FILE       private_key_jwt, signing with this private JWK (with its kid)
//
// GET /login starts the code flow (PKCE S256, state, nonce, all bound to this browser by a
// cookie); GET /callback takes the code to the token endpoint, has openid-client validate the
// ID token (its signature too, against the JWKS), fetches userinfo, and shows what it
// received as JSON in <pre id="result">, also written to stdout as one line.
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { parseArgs } from 'node:util'
import * as client from 'openid-client'

const { values: args } = parseArgs({
  options: {
    issuer: { type: 'string' },
    'client-id': { type: 'string' },
    port: { type: 'string' },
  },
})
const here = `http://127.0.0.1:${args.port}`
const redirectUri = `${here}/callback`

async function clientAuthentication () {
  if (process.env.RP_PRIVATE_JWK) {
    const jwk = JSON.parse(readFileSync(process.env.RP_PRIVATE_JWK, 'utf8'))
    const key = await crypto.subtle.importKey(
      'jwk', jwk, { name: 'ECDSA', namedCurve: jwk.crv }, false, ['sign'])
    return client.PrivateKeyJwt({ key, kid: jwk.kid })
  }
  return client.ClientSecretBasic(process.env.RP_CLIENT_SECRET)
}

const config = await client.discovery(
  new URL(args.issuer),
  args['client-id'],
  undefined,
  await clientAuthentication(),
  // Plain http on the test's loopback stack; and the ID token's signature checked against
  // the provider's JWKS, which openid-client skips by default for a token endpoint's answer.
  { execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks] },
)

const flows = new Map() // this RP's browser sessions: cookie → what the callback checks

function cookie (request) {
  const found = /(?:^|;\s*)rp=([\w-]+)/.exec(request.headers.cookie ?? '')
  return found?.[1]
}

async function login (request, response) {
  const flow = {
    verifier: client.randomPKCECodeVerifier(),
    state: client.randomState(),
    nonce: client.randomNonce(),
  }
  const session = randomBytes(16).toString('base64url')
  flows.set(session, flow)
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: 'openid profile email roles',
    code_challenge: await client.calculatePKCECodeChallenge(flow.verifier),
    code_challenge_method: 'S256',
    state: flow.state,
    nonce: flow.nonce,
  })
  response.writeHead(302, {
    location: url.href,
    'set-cookie': `rp=${session}; Path=/; HttpOnly; SameSite=Lax`,
  })
  response.end()
}

async function callback (request, response) {
  const flow = flows.get(cookie(request))
  if (!flow) throw new Error('no sign-in was started in this browser')
  flows.delete(cookie(request))
  const tokens = await client.authorizationCodeGrant(config, new URL(request.url, here), {
    pkceCodeVerifier: flow.verifier,
    expectedState: flow.state,
    expectedNonce: flow.nonce,
    idTokenExpected: true,
  })
  const idToken = tokens.claims()
  const header = JSON.parse(Buffer.from(tokens.id_token.split('.')[0], 'base64url'))
  const result = {
    library: 'openid-client',
    id_token: idToken,
    id_token_header: header,
    // The keys openid-client fetched from the discovered jwks_uri to check the signature.
    jwks_kids: (client.getJwksCache(config)?.jwks.keys ?? []).map((key) => key.kid),
    userinfo: await client.fetchUserInfo(config, tokens.access_token, idToken.sub),
  }
  console.log(JSON.stringify(result))
  show(response, 200, 'Zalogowano przez UEOZ', JSON.stringify(result, null, 2))
}

function show (response, status, title, text) {
  const escaped = text.replace(/[&<>]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;' })[c])
  response.writeHead(status, { 'content-type': 'text/html; charset=utf-8' })
  response.end(
    `<!doctype html><html lang="pl"><meta charset="utf-8"><title>${title}</title>` +
    `<h1>${title}</h1><pre id="result">${escaped}</pre></html>`)
}

createServer((request, response) => {
  const path = new URL(request.url, here).pathname
  const route = { '/login': login, '/callback': callback }[path]
  if (!route) return show(response, 404, 'Nie ma takiej strony', path)
  route(request, response).catch((error) => {
    console.error(error)
    show(response, 500, 'Logowanie nie powiodło się', `${error.name}: ${error.message}`)
  })
}).listen(Number(args.port), '127.0.0.1', () => {
  console.log(JSON.stringify({ listening: here }))
})
