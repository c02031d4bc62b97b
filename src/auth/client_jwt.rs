//! Verification of CDS client JWTs, step by step as CDS Hooks 2.0 ("Trusting CDS Clients") asks.
//!
//! 1. `Authorization: Bearer <jwt>` is present.
//! 2. The header names an asymmetric algorithm radsight accepts (ES256/ES384/RS256/RS384; `none`
//!    and every HMAC are refused before any key is looked at), `typ` is `JWT` and `kid` is set.
//! 3. `iss` is a registered client; a `jku`, if present, is one that client registered.
//! 4. The key is found by `kid` in the client's JWKS (configured, or fetched from its `jku`),
//!    and the key's own `alg`, if it has one, equals the header's.
//! 5. Signature, `aud` (the exact URL called), `exp`, `nbf` and `iss` are checked with a small
//!    leeway; `iat` may not lie in the future, nor `exp` beyond the configured lifetime.
//! 6. The `jti` is recorded in the database; a `jti` seen before from that `iss` is a replay.
//!    [`ClientVerifier::verify`] records it at once. A hook call instead takes an
//!    [`UnspentJti`] ([`ClientVerifier::verify_unspent`]): the `jti` is only looked up, and is
//!    recorded in the same group commit as the call's audit entry and cards (or its failure
//!    entry), so the call costs one durable write instead of two.
//!
//! Every failure is one [`AuthFailure`], which callers answer with a bare 401 and audit.
//! The token itself is never logged, stored or echoed.

use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use std::cell::Cell;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter, SqlErr,
    TransactionTrait, TryInsertResult,
};
use serde::Deserialize;

use super::jwks::{KeySource, KeyStore};
use crate::configuration::AuthSettings;
use crate::store::entities::client_jti;

/// A client whose request carried a valid, fresh JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClient {
    pub iss: String,
    pub tenant: Option<String>,
    /// Space-separated scopes, for callers that are authorised by scope (auditors).
    pub scope: Option<String>,
}

impl VerifiedClient {
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scope.as_deref().is_some_and(|s| s.split(' ').any(|x| x == wanted))
    }
}

/// Why a request was not authenticated. The reason goes to the audit trail, never to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no bearer token")]
    MissingToken,
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("algorithm is not accepted")]
    DisallowedAlgorithm,
    #[error("header typ is not JWT")]
    WrongType,
    #[error("header has no kid")]
    MissingKid,
    #[error("issuer is not registered")]
    UnknownIssuer,
    #[error("jku is not registered for this issuer")]
    JkuNotAllowed,
    #[error("no key with this kid")]
    UnknownKey,
    #[error("the client's keys could not be obtained")]
    KeysUnavailable,
    #[error("signature does not verify")]
    BadSignature,
    #[error("audience is not the URL called")]
    WrongAudience,
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("a required claim is missing or malformed")]
    MissingClaim,
    #[error("token lifetime exceeds the allowed maximum")]
    LifetimeTooLong,
    #[error("jti was already used")]
    Replayed,
    #[error("the replay check could not be made")]
    ReplayStoreUnavailable,
}

impl AuthFailure {
    /// A stable code for the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "missing-token",
            AuthFailure::Malformed => "malformed",
            AuthFailure::DisallowedAlgorithm => "disallowed-alg",
            AuthFailure::WrongType => "wrong-typ",
            AuthFailure::MissingKid => "missing-kid",
            AuthFailure::UnknownIssuer => "unknown-iss",
            AuthFailure::JkuNotAllowed => "jku-not-allowed",
            AuthFailure::UnknownKey => "unknown-kid",
            AuthFailure::KeysUnavailable => "keys-unavailable",
            AuthFailure::BadSignature => "bad-signature",
            AuthFailure::WrongAudience => "wrong-aud",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not-yet-valid",
            AuthFailure::MissingClaim => "missing-claim",
            AuthFailure::LifetimeTooLong => "lifetime-too-long",
            AuthFailure::Replayed => "replayed-jti",
            AuthFailure::ReplayStoreUnavailable => "replay-store-unavailable",
        }
    }
}

const ACCEPTED: [Algorithm; 4] = [Algorithm::ES384, Algorithm::RS384, Algorithm::ES256, Algorithm::RS256];

#[derive(Deserialize)]
struct UnverifiedClaims {
    iss: String,
}

#[derive(Deserialize)]
struct Claims {
    exp: i64,
    iat: i64,
    jti: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

pub struct ClientVerifier {
    keys: KeyStore,
    settings: AuthSettings,
    /// Where seen `jti`s are recorded: the shared database, through a connection whose commits
    /// need not wait for the disk (see `store::Durability::Relaxed`).
    replay_store: DatabaseConnection,
    gate: crate::store::WriteGate,
}

impl ClientVerifier {
    pub fn new(keys: KeyStore, settings: AuthSettings, replay_store: DatabaseConnection, gate: crate::store::WriteGate) -> ClientVerifier {
        ClientVerifier { keys, settings, replay_store, gate }
    }

    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// Extracts the `iss` claim without verifying anything, only so that a failure can be
    /// audited against the issuer the token claims.
    pub fn claimed_issuer(authorization: Option<&str>) -> Option<String> {
        let token = bearer(authorization)?;
        jsonwebtoken::dangerous::insecure_decode_claims::<UnverifiedClaims>(token).ok().map(|c| c.iss)
    }

    /// Verifies the `Authorization` header value of a request made to `called_url`, and records
    /// its `jti` as used.
    pub async fn verify(&self, authorization: Option<&str>, called_url: &str) -> Result<VerifiedClient, AuthFailure> {
        let (client, jti) = self.check(authorization, called_url).await?;
        let _gate = self.gate.enter().await;
        remember_jti(&self.replay_store, &jti).await?;
        Ok(client)
    }

    /// Verifies the `Authorization` header value of a request made to `called_url` and checks,
    /// without writing, that its `jti` has not been used. The caller records the `jti` in its own
    /// commit ([`JtiClaim::spend_in`]) and marks it spent; an [`UnspentJti`] dropped unspent
    /// records it on its own, so a token is never good for a second call.
    pub async fn verify_unspent(&self, authorization: Option<&str>, called_url: &str) -> Result<(VerifiedClient, UnspentJti), AuthFailure> {
        let (client, claim) = self.check(authorization, called_url).await?;
        let unspent = UnspentJti { claim, spent: Cell::new(false), store: self.replay_store.clone(), gate: self.gate.clone() };
        match client_jti::Entity::find_by_id((unspent.claim.iss.clone(), unspent.claim.jti.clone())).one(&self.replay_store).await {
            Ok(None) => Ok((client, unspent)),
            Ok(Some(_)) => {
                unspent.spent.set(true); // recorded already: nothing to record on drop
                Err(AuthFailure::Replayed)
            }
            Err(e) => {
                tracing::error!(error = %e, "replay store read failed");
                Err(AuthFailure::ReplayStoreUnavailable)
            }
        }
    }

    /// Every check but the replay check.
    async fn check(&self, authorization: Option<&str>, called_url: &str) -> Result<(VerifiedClient, JtiClaim), AuthFailure> {
        let token = bearer(authorization).ok_or(AuthFailure::MissingToken)?;
        // decode_header fails for `alg: none` and unknown algorithms: both are refusals.
        let header = decode_header(token).map_err(|_| AuthFailure::DisallowedAlgorithm)?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(AuthFailure::DisallowedAlgorithm);
        }
        if !header.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("JWT")) {
            return Err(AuthFailure::WrongType);
        }
        let kid = header.kid.as_deref().ok_or(AuthFailure::MissingKid)?;
        let iss = jsonwebtoken::dangerous::insecure_decode_claims::<UnverifiedClaims>(token).map_err(|_| AuthFailure::MissingClaim)?.iss;
        let client = self.keys.client(&iss).ok_or(AuthFailure::UnknownIssuer)?;
        let source = match header.jku.as_deref() {
            Some(jku) if client.jku.iter().any(|allowed| allowed == jku) => KeySource::Jku(jku.to_owned()),
            Some(_) => return Err(AuthFailure::JkuNotAllowed),
            None => KeySource::Registered,
        };
        let found = self.keys.find_key(&iss, &source, kid).await?;
        // A key published for one algorithm is never used with another (alg confusion).
        if !found.allows(header.alg) {
            return Err(AuthFailure::DisallowedAlgorithm);
        }
        let key = found.decoding.as_ref().ok_or(AuthFailure::UnknownKey)?;

        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway_secs;
        validation.validate_nbf = true;
        validation.set_audience(&[called_url]);
        validation.set_issuer(&[&iss]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        let claims = decode::<Claims>(token, key, &validation).map_err(|e| map_error(e.kind()))?.claims;

        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let leeway = self.settings.leeway_secs as i64;
        if claims.iat > now + leeway {
            return Err(AuthFailure::NotYetValid);
        }
        if claims.exp > now + self.settings.max_token_lifetime_secs as i64 + leeway {
            return Err(AuthFailure::LifetimeTooLong);
        }
        if claims.jti.is_empty() || claims.jti.len() > 256 {
            return Err(AuthFailure::MissingClaim);
        }
        let claim = JtiClaim { iss: iss.clone(), jti: claims.jti, expires_at: claims.exp + leeway };
        Ok((VerifiedClient { iss, tenant: claims.tenant, scope: claims.scope }, claim))
    }
}

/// A verified token's `(iss, jti)`, kept until the token expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JtiClaim {
    iss: String,
    jti: String,
    expires_at: i64,
}

/// Whether recording a `jti` found it unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    First,
    Replayed,
}

impl JtiClaim {
    fn row(&self) -> client_jti::ActiveModel {
        client_jti::ActiveModel { iss: Set(self.iss.clone()), jti: Set(self.jti.clone()), expires_at: Set(self.expires_at) }
    }

    /// Records the `jti` on `conn` (a transaction or savepoint of the caller's). A second use
    /// is answered [`Spend::Replayed`] without an error, so it writes nothing and leaves the
    /// transaction usable (an error would abort a PostgreSQL transaction). Two transactions
    /// racing on one `jti` are decided by the primary key: the later one waits for the earlier
    /// to commit and then finds the row.
    pub async fn spend_in<C: ConnectionTrait>(&self, conn: &C) -> Result<Spend, DbErr> {
        // Without RETURNING, a conflict shows as no row affected (not as `Conflicted`).
        match client_jti::Entity::insert(self.row()).on_conflict_do_nothing().exec_without_returning(conn).await? {
            TryInsertResult::Inserted(1) => Ok(Spend::First),
            TryInsertResult::Inserted(0) | TryInsertResult::Conflicted => Ok(Spend::Replayed),
            other => Err(DbErr::Custom(format!("recording a jti: unexpected insert result {other:?}"))),
        }
    }
}

/// A token verified with its `jti` not yet recorded (see [`ClientVerifier::verify_unspent`]).
///
/// The holder records it in its own commit and then calls [`UnspentJti::mark_spent`]. Dropped
/// unspent (the call failed before its commit, was refused for being busy, or was cancelled
/// when the client went away), it records the `jti` in a task of its own, as
/// [`ClientVerifier::verify`] would have. Marking spent without a commit that recorded it is
/// the one misuse that would let a token be used twice.
pub struct UnspentJti {
    claim: JtiClaim,
    spent: Cell<bool>,
    store: DatabaseConnection,
    gate: crate::store::WriteGate,
}

impl UnspentJti {
    pub fn claim(&self) -> &JtiClaim {
        &self.claim
    }

    /// The `jti` is recorded in a committed transaction (or was found recorded there).
    pub fn mark_spent(&self) {
        self.spent.set(true);
    }

    pub fn is_spent(&self) -> bool {
        self.spent.get()
    }

    /// Records the `jti` now, on its own (as [`ClientVerifier::verify`] does), for a call that
    /// ends without a commit of its own to record it in, such as one refused as busy: the token
    /// is used up before the answer goes out.
    pub async fn spend_alone(self) {
        if !self.spent.get() && record_alone(&self.store, &self.gate, &self.claim).await {
            self.spent.set(true);
        }
        // Left unspent if that failed: dropping it tries once more.
    }
}

/// Records a used token's `jti` in a write of its own, under the write gate. Found recorded
/// already (a racing use of the same token), it is used up all the same: true either way.
async fn record_alone(store: &DatabaseConnection, gate: &crate::store::WriteGate, claim: &JtiClaim) -> bool {
    let _gate = gate.enter().await;
    matches!(remember_jti(store, claim).await, Ok(()) | Err(AuthFailure::Replayed))
}

impl Drop for UnspentJti {
    fn drop(&mut self) {
        if self.spent.get() {
            return;
        }
        let (claim, store, gate) = (self.claim.clone(), self.store.clone(), self.gate.clone());
        let record = async move {
            if !record_alone(&store, &gate, &claim).await {
                tracing::error!("a token's jti could not be recorded after its call failed");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(record)),
            Err(_) => tracing::error!("a token's jti could not be recorded: no runtime to record it on"),
        }
    }
}

fn bearer(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn map_error(kind: &jsonwebtoken::errors::ErrorKind) -> AuthFailure {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => AuthFailure::BadSignature,
        K::ExpiredSignature => AuthFailure::Expired,
        K::ImmatureSignature => AuthFailure::NotYetValid,
        K::InvalidAudience => AuthFailure::WrongAudience,
        K::InvalidIssuer => AuthFailure::UnknownIssuer,
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => AuthFailure::DisallowedAlgorithm,
        K::MissingRequiredClaim(_) | K::InvalidClaimFormat(_) | K::Json(_) => AuthFailure::MissingClaim,
        K::InvalidEcdsaKey | K::InvalidRsaKey(_) | K::InvalidKeyFormat => AuthFailure::UnknownKey,
        _ => AuthFailure::Malformed,
    }
}

/// Records `(iss, jti)` until the token expires; a second insert is a replay. Kept in the
/// database so the check holds across instances.
async fn remember_jti(db: &DatabaseConnection, claim: &JtiClaim) -> Result<(), AuthFailure> {
    let row = claim.row();
    let insert = async {
        if db.get_database_backend() != DbBackend::Postgres {
            return client_jti::Entity::insert(row).exec_without_returning(db).await.map(|_| ());
        }
        // PostgreSQL: the same relaxed durability, for this transaction only.
        let txn = db.begin().await?;
        txn.execute_unprepared("SET LOCAL synchronous_commit TO OFF").await?;
        client_jti::Entity::insert(row).exec_without_returning(&txn).await?;
        txn.commit().await
    };
    match insert.await {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => Err(AuthFailure::Replayed),
        Err(e) => {
            tracing::error!(error = %e, "replay store write failed");
            Err(AuthFailure::ReplayStoreUnavailable)
        }
    }
}

/// Forgets `jti`s whose tokens have expired; run periodically.
pub async fn purge_expired_jtis(db: &DatabaseConnection) -> Result<u64, sea_orm::DbErr> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let r = client_jti::Entity::delete_many().filter(client_jti::Column::ExpiresAt.lt(now)).exec(db).await?;
    Ok(r.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bearer_credentials_are_read() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
