//! Issue, verify and revoke a JWT with token_store, from Rust (tokio-postgres).
//!
//! Connects to the cluster named by PGHOST, PGPORT, PGUSER and PGDATABASE (and PGPASSWORD if
//! set), creates its signing key `example-rust` when it is missing (that step needs
//! token_store_admin), then issues a token, verifies it, revokes it and checks that it is refused.
//! Prints each step; exits non-zero on any unexpected result.
//!
//!     cargo run --release   # in examples/rust, with the PG* variables set

use std::env;
use std::process::ExitCode;

use serde_json::{json, Value};
use tokio_postgres::{Client, Config, NoTls};

const KID: &str = "example-rust";

type Error = Box<dyn std::error::Error>;

fn config_from_env() -> Config {
    let var = |name: &str, default: &str| env::var(name).unwrap_or_else(|_| default.to_string());
    let mut config = Config::new();
    config
        .host(var("PGHOST", "localhost"))
        .port(
            var("PGPORT", "5432")
                .parse()
                .expect("PGPORT is a port number"),
        )
        .user(var("PGUSER", "postgres"))
        .dbname(var("PGDATABASE", "postgres"))
        .application_name("token_store example (rust)");
    if let Ok(password) = env::var("PGPASSWORD") {
        config.password(password);
    }
    config
}

fn fail(what: String) -> Error {
    what.into()
}

async fn run(client: &Client) -> Result<(), Error> {
    let version: String = client
        .query_one("SELECT current_setting('server_version')", &[])
        .await?
        .get(0);
    println!("connected: PostgreSQL {version}");

    // 1. A signing key of our own, made inside the database (the secret never leaves it).
    let exists = client
        .query_opt("SELECT 1 FROM token_store.keys WHERE kid = $1", &[&KID])
        .await?
        .is_some();
    if exists {
        println!("key: {KID} exists");
    } else {
        client
            .query_one("SELECT token_store.generate_key($1, 'HS256')", &[&KID])
            .await?;
        println!("key: {KID} created");
    }

    // 2. Issue: token_store adds iat, exp and jti, stores the token and returns it.
    let claims = json!({"sub": "example-user", "scope": "read"});
    let ttl = "10 minutes";
    let token: String = client
        .query_one(
            "SELECT token_store.jwt_issue($1, $2::text::interval, $3)",
            &[&claims, &ttl, &KID],
        )
        .await?
        .get(0);
    if token.split('.').count() != 3 {
        return Err(fail(format!(
            "jwt_issue returned something that is not a JWT: {token:?}"
        )));
    }
    println!("issued: {}...", &token[..20]);

    // 3. Verify: the claims, or an ERROR with SQLSTATE 28000.
    let verified: Value = client
        .query_one("SELECT token_store.jwt_verify($1)", &[&token])
        .await?
        .get(0);
    if verified["sub"] != "example-user" || verified["scope"] != "read" {
        return Err(fail(format!("unexpected claims: {verified}")));
    }
    println!(
        "verified: sub={} scope={}",
        verified["sub"].as_str().unwrap(),
        verified["scope"].as_str().unwrap()
    );

    let valid: bool = client
        .query_one("SELECT token_store.jwt_valid($1)", &[&token])
        .await?
        .get(0);
    if !valid {
        return Err(fail("jwt_valid is false for a fresh token".into()));
    }
    println!("valid: true");

    // 4. Revoke: true when this call revoked it.
    let reason = "example";
    let revoked: bool = client
        .query_one("SELECT token_store.jwt_revoke($1, $2)", &[&token, &reason])
        .await?
        .get(0);
    if !revoked {
        return Err(fail("jwt_revoke returned false for a live token".into()));
    }
    println!("revoked: true");

    // 5. The revoked token is refused: SQLSTATE 28000, "token rejected: revoked".
    match client
        .query_one("SELECT token_store.jwt_verify($1)", &[&token])
        .await
    {
        Ok(_) => return Err(fail("a revoked token still verifies".into())),
        Err(e) => match e.as_db_error() {
            Some(db)
                if db.code().code() == "28000" && db.message() == "token rejected: revoked" =>
            {
                println!(
                    "verify after revoke: SQLSTATE {} {}",
                    db.code().code(),
                    db.message()
                );
            }
            _ => return Err(fail(format!("unexpected error: {}", describe(&e)))),
        },
    }

    let info: Value = client
        .query_one("SELECT token_store.jwt_introspect($1)", &[&token])
        .await?
        .get(0);
    if info != json!({"active": false, "reason": "revoked"}) {
        return Err(fail(format!("unexpected introspection: {info}")));
    }
    println!("introspect after revoke: active=false reason=revoked");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (client, connection) = match config_from_env().connect(NoTls).await {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("FAILED: cannot connect: {}", describe(&e));
            return ExitCode::FAILURE;
        }
    };
    let conn_task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection error: {e}");
        }
    });
    let result = run(&client).await;
    drop(client);
    let _ = conn_task.await;
    match result {
        Ok(()) => {
            println!("done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("FAILED: {}", describe(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// A server error as SQLSTATE and message (tokio-postgres prints only "db error" for it).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    match e
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|pg| pg.as_db_error())
    {
        Some(db) => format!("SQLSTATE {} {}", db.code().code(), db.message()),
        None => match e.source() {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}
