// Issue, verify and revoke a JWT with token_store, from Node.js (pg).
//
// Connects to the cluster named by PGHOST, PGPORT, PGUSER and PGDATABASE (and PGPASSWORD if set;
// pg reads them), creates its signing key `example-node` when it is missing (that step needs
// token_store_admin), then issues a token, verifies it, revokes it and checks that it is refused.
// Prints each step; exits non-zero on any unexpected result.
//
//     npm ci && node app.js
'use strict';

const { Client } = require('pg');

const KID = 'example-node';

class Unexpected extends Error {}

async function one(client, text, values) {
  // Every value goes in as a bind parameter ($1, $2, ...).
  const res = await client.query(text, values);
  return res.rows[0][res.fields[0].name];
}

async function run(client) {
  console.log(`connected: PostgreSQL ${await one(client, "SELECT current_setting('server_version') AS v")}`);

  // 1. A signing key of our own, made inside the database (the secret never leaves it).
  const { rowCount } = await client.query('SELECT 1 FROM token_store.keys WHERE kid = $1', [KID]);
  if (rowCount > 0) {
    console.log(`key: ${KID} exists`);
  } else {
    await client.query("SELECT token_store.generate_key($1, 'HS256')", [KID]);
    console.log(`key: ${KID} created`);
  }

  // 2. Issue: token_store adds iat, exp and jti, stores the token and returns it.
  const claims = { sub: 'example-user', scope: 'read' };
  const token = await one(client, 'SELECT token_store.jwt_issue($1::jsonb, $2::interval, $3) AS t',
    [JSON.stringify(claims), '10 minutes', KID]);
  if (typeof token !== 'string' || token.split('.').length !== 3) {
    throw new Unexpected(`jwt_issue returned something that is not a JWT: ${token}`);
  }
  console.log(`issued: ${token.slice(0, 20)}...`);

  // 3. Verify: the claims (pg parses jsonb into an object), or an ERROR with SQLSTATE 28000.
  const verified = await one(client, 'SELECT token_store.jwt_verify($1) AS c', [token]);
  if (verified.sub !== 'example-user' || verified.scope !== 'read') {
    throw new Unexpected(`unexpected claims: ${JSON.stringify(verified)}`);
  }
  console.log(`verified: sub=${verified.sub} scope=${verified.scope}`);

  if ((await one(client, 'SELECT token_store.jwt_valid($1) AS v', [token])) !== true) {
    throw new Unexpected('jwt_valid is false for a fresh token');
  }
  console.log('valid: true');

  // 4. Revoke: true when this call revoked it.
  if ((await one(client, 'SELECT token_store.jwt_revoke($1, $2) AS r', [token, 'example'])) !== true) {
    throw new Unexpected('jwt_revoke returned false for a live token');
  }
  console.log('revoked: true');

  // 5. The revoked token is refused: SQLSTATE 28000, "token rejected: revoked".
  let refused = null;
  try {
    await client.query('SELECT token_store.jwt_verify($1)', [token]);
  } catch (e) {
    refused = e;
  }
  if (refused === null) throw new Unexpected('a revoked token still verifies');
  if (refused.code !== '28000' || refused.message !== 'token rejected: revoked') {
    throw new Unexpected(`unexpected error: ${refused.code} ${refused.message}`);
  }
  console.log(`verify after revoke: SQLSTATE ${refused.code} ${refused.message}`);

  const info = await one(client, 'SELECT token_store.jwt_introspect($1) AS i', [token]);
  if (JSON.stringify(info) !== JSON.stringify({ active: false, reason: 'revoked' })) {
    throw new Unexpected(`unexpected introspection: ${JSON.stringify(info)}`);
  }
  console.log('introspect after revoke: active=false reason=revoked');
}

async function main() {
  const client = new Client({ application_name: 'token_store example (node)' });
  try {
    await client.connect();
    await run(client);
    console.log('done');
  } catch (e) {
    console.error(`FAILED: ${e.code ? e.code + ' ' : ''}${e.message}`);
    process.exitCode = 1;
  } finally {
    await client.end().catch(() => {});
  }
}

main();
