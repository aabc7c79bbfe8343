//! Bearer-token authentication. Access tokens are JWTs whose algorithm is pinned by
//! configuration (HS256 with a secret by default; EdDSA or RS256 with PEM key files): a token
//! in any other algorithm, `alg: none` included, is refused. `iss`, `aud`, `exp` and the token
//! type are checked, and the session the token descends from must still be active — the
//! identity module answers that through the [`SessionCheck`] trait, so a logout takes effect
//! on the very next request. Every module authenticates with the [`AuthUser`] extractor.
//! Tokens are read from the `Authorization` header only, never from the URL.

use std::future::ready;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use futures_util::future::{BoxFuture, LocalBoxFuture};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::AppError;
use crate::config::AuthSettings;

const ACCESS_TOKEN_TYPE: &str = "access";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: Uuid,
    /// Session id: the login this token descends from.
    pub sid: Uuid,
    pub role: String,
    pub tier: String,
    /// Token type; only `access` authenticates API calls.
    pub typ: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
}

/// Signs and verifies access tokens.
pub struct TokenKeys {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("auth.algorithm \"{0}\" is not supported; use HS256, EdDSA or RS256")]
    Algorithm(String),
    #[error("auth.{0} is required for {1}")]
    MissingFile(&'static str, &'static str),
    #[error("could not read auth.{0}: {1}")]
    Read(&'static str, std::io::Error),
    #[error("auth.{0} is not a valid PEM key")]
    Pem(&'static str, #[source] jsonwebtoken::errors::Error),
}

/// A caller's role, from the most to the least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    User,
    Moderator,
    Admin,
}

impl Role {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "user" => Some(Self::User),
            "moderator" => Some(Self::Moderator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Moderator => "moderator",
            Self::Admin => "admin",
        }
    }
}

/// What a handler knows about its authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub role: Role,
    pub tier: String,
}

impl AuthUser {
    /// 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), AppError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(AppError::forbidden("You are not allowed to do this."))
        }
    }
}

/// Whether a session is still active (not logged out, not revoked, account not disabled).
/// Implemented by the identity module; registered as app data by `app.rs`.
pub trait SessionCheck: Send + Sync {
    fn is_active(&self, user_id: Uuid, session_id: Uuid) -> BoxFuture<'_, Result<bool, AppError>>;
}

fn read_pem(
    file: Option<&String>,
    name: &'static str,
    algorithm: &'static str,
) -> Result<Vec<u8>, KeyError> {
    let path = file.ok_or(KeyError::MissingFile(name, algorithm))?;
    std::fs::read(path).map_err(|e| KeyError::Read(name, e))
}

impl TokenKeys {
    pub fn new(settings: &AuthSettings) -> Result<Self, KeyError> {
        let (algorithm, encoding, decoding) = match settings.algorithm.to_ascii_uppercase().as_str()
        {
            "HS256" => {
                let secret = settings.jwt_secret.expose_secret().as_bytes();
                (
                    Algorithm::HS256,
                    EncodingKey::from_secret(secret),
                    DecodingKey::from_secret(secret),
                )
            }
            "EDDSA" => {
                let private = read_pem(
                    settings.private_key_file.as_ref(),
                    "private_key_file",
                    "EdDSA",
                )?;
                let public = read_pem(
                    settings.public_key_file.as_ref(),
                    "public_key_file",
                    "EdDSA",
                )?;
                (
                    Algorithm::EdDSA,
                    EncodingKey::from_ed_pem(&private)
                        .map_err(|e| KeyError::Pem("private_key_file", e))?,
                    DecodingKey::from_ed_pem(&public)
                        .map_err(|e| KeyError::Pem("public_key_file", e))?,
                )
            }
            "RS256" => {
                let private = read_pem(
                    settings.private_key_file.as_ref(),
                    "private_key_file",
                    "RS256",
                )?;
                let public = read_pem(
                    settings.public_key_file.as_ref(),
                    "public_key_file",
                    "RS256",
                )?;
                (
                    Algorithm::RS256,
                    EncodingKey::from_rsa_pem(&private)
                        .map_err(|e| KeyError::Pem("private_key_file", e))?,
                    DecodingKey::from_rsa_pem(&public)
                        .map_err(|e| KeyError::Pem("public_key_file", e))?,
                )
            }
            other => return Err(KeyError::Algorithm(other.to_owned())),
        };
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Ok(Self {
            algorithm,
            encoding,
            decoding,
            validation,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        })
    }

    /// Issues an access token valid for `ttl`.
    pub fn issue_access(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        role: &str,
        tier: &str,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = chrono::Utc::now().timestamp();
        let claims = AccessClaims {
            sub: user_id,
            sid: session_id,
            role: role.to_owned(),
            tier: tier.to_owned(),
            typ: ACCESS_TOKEN_TYPE.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + ttl.as_secs() as i64,
            jti: Uuid::now_v7(),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.encoding)
    }

    /// Verifies signature, algorithm, issuer, audience, expiry and token type. Says nothing
    /// about the session; [`AuthUser`] checks that too.
    pub fn verify_access(&self, token: &str) -> Option<AccessClaims> {
        let data =
            jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation).ok()?;
        (data.claims.typ == ACCESS_TOKEN_TYPE).then_some(data.claims)
    }
}

/// The bearer token of the `Authorization` header, if any.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl AuthUser {
    /// The caller of an access token presented outside the `Authorization` header (a
    /// WebSocket's sub-protocol or first frame): verified and its session checked.
    pub async fn from_token(
        keys: &TokenKeys,
        sessions: &dyn SessionCheck,
        token: &str,
    ) -> Result<Self, AppError> {
        Self::from_claims(keys.verify_access(token), sessions).await
    }

    async fn from_claims(
        claims: Option<AccessClaims>,
        sessions: &dyn SessionCheck,
    ) -> Result<Self, AppError> {
        let unauthorized = || AppError::unauthorized("A valid access token is required.");
        let claims = claims.ok_or_else(unauthorized)?;
        let role = Role::parse(&claims.role).ok_or_else(unauthorized)?;
        if !sessions.is_active(claims.sub, claims.sid).await? {
            return Err(AppError::unauthorized(
                "This session has ended; log in again.",
            ));
        }
        tracing::Span::current().record("user_id", tracing::field::display(claims.sub));
        Ok(AuthUser {
            user_id: claims.sub,
            session_id: claims.sid,
            role,
            tier: claims.tier,
        })
    }
}

impl FromRequest for AuthUser {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let keys = req.app_data::<web::Data<TokenKeys>>();
        let sessions = req.app_data::<web::Data<dyn SessionCheck>>().cloned();
        let (Some(keys), Some(sessions)) = (keys, sessions) else {
            return Box::pin(ready(Err(AppError::internal(anyhow::anyhow!(
                "TokenKeys or SessionCheck not registered"
            )))));
        };
        // The rate-limit middleware has usually verified the token already.
        let verified = req.extensions().get::<AccessClaims>().cloned();
        let claims =
            verified.or_else(|| bearer_token(req).and_then(|token| keys.verify_access(token)));
        Box::pin(async move { Self::from_claims(claims, &**sessions).await })
    }
}

/// The caller when the request carries a bearer token, `None` for an anonymous request.
/// A token that is present but invalid, expired or revoked is still a 401, so a client learns
/// to refresh instead of silently browsing as a stranger.
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<AuthUser>);

impl MaybeUser {
    pub fn user_id(&self) -> Option<Uuid> {
        self.0.as_ref().map(|user| user.user_id)
    }
}

impl FromRequest for MaybeUser {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if req.headers().get(header::AUTHORIZATION).is_none() {
            return Box::pin(ready(Ok(Self(None))));
        }
        let user = AuthUser::from_request(req, payload);
        Box::pin(async move { Ok(Self(Some(user.await?))) })
    }
}
