//! Bulk seeding for the scale benchmark (`authstore scale`): live sessions and active refresh
//! tokens, written straight into the database in large transactions. Never used by the server.

use chrono::{DateTime, Duration, Utc};
use surrealdb::types::Object;

use super::{Store, StoreError, Vars, record};
use crate::secret;

/// The refresh token seeded as number `k`; `token.get` on it finds the seeded row.
pub fn seeded_token(k: usize) -> String {
    format!("scale-token-{k}")
}

/// The session seeded as number `k`.
pub fn seeded_session(k: usize) -> String {
    format!("scale-session-{k}")
}

impl Store {
    /// Writes sessions and tokens `start..start + count` (each token in its own family) for
    /// `client_id`, live for `ttl` from `now`, in one transaction.
    pub async fn seed(
        &self,
        start: usize,
        count: usize,
        client_id: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let expires_at = now + ttl;
        let (mut sessions, mut families, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
        for k in start..start + count {
            let id = seeded_session(k);
            let mut s = Object::new();
            s.insert("id", record("session", &id));
            s.insert("session_id", id);
            s.insert("client_id", client_id.to_string());
            s.insert("redirect_uri", "http://127.0.0.1:9/callback".to_string());
            s.insert("scope", "mcp:tools".to_string());
            s.insert("user_id", format!("user-{}", k % 10_000));
            s.insert("created_at", now);
            s.insert("updated_at", now);
            s.insert("expires_at", expires_at);
            s.insert("rev", 1i64);
            sessions.push(s);

            let hash = secret::digest(&seeded_token(k));
            let grant_id = format!("scale-grant-{k}");
            let user_id = format!("user-{}", k % 10_000);
            let mut f = Object::new();
            f.insert("id", record("family", &grant_id));
            f.insert("grant_id", grant_id.clone());
            f.insert("client_id", client_id.to_string());
            f.insert("user_id", user_id.clone());
            f.insert("created_at", now);
            f.insert("expires_at", expires_at);
            f.insert("active_token", hash.clone());
            f.insert("rev", 1i64);
            families.push(f);

            let mut t = Object::new();
            t.insert("id", record("token", &hash));
            t.insert("hash", hash);
            t.insert("token_id", format!("scale-tid-{k}"));
            t.insert("grant_id", grant_id);
            t.insert("client_id", client_id.to_string());
            t.insert("user_id", user_id);
            t.insert("scope", "mcp:tools".to_string());
            t.insert("issued_at", now);
            t.insert("expires_at", expires_at);
            t.insert("status", "active".to_string());
            t.insert("rev", 1i64);
            tokens.push(t);
        }
        const SQL: &str = "BEGIN; INSERT INTO session $sessions RETURN NONE; INSERT INTO family $families RETURN NONE; \
            INSERT INTO token $tokens RETURN NONE; COMMIT;";
        let vars = Vars::new().set("sessions", sessions).set("families", families).set("tokens", tokens);
        self.retrying(|| async { self.query(SQL, vars.clone()).await.map(|_| ()) }).await
    }
}
