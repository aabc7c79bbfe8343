//! Bearer-token authentication: access tokens are HS256 JWTs with the algorithm pinned and
//! `iss`, `aud`, `exp` and the token type checked. The identity module issues them (and adds
//! session revocation on top); every module authenticates with the [`AuthUser`] extractor.

use std::future::{Ready, ready};
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::AppError;
use crate::config::AuthSettings;

const ACCESS_TOKEN_TYPE: &str = "access";
const ALGORITHM: Algorithm = Algorithm::HS256;

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
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

/// What a handler knows about its authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub role: String,
    pub tier: String,
}

impl TokenKeys {
    pub fn new(settings: &AuthSettings) -> Self {
        let secret = settings.jwt_secret.expose_secret().as_bytes();
        let mut validation = Validation::new(ALGORITHM);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        }
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
        jsonwebtoken::encode(&Header::new(ALGORITHM), &claims, &self.encoding)
    }

    /// Verifies signature, algorithm, issuer, audience, expiry and token type.
    pub fn verify_access(&self, token: &str) -> Option<AccessClaims> {
        let data =
            jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation).ok()?;
        (data.claims.typ == ACCESS_TOKEN_TYPE).then_some(data.claims)
    }
}

fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl FromRequest for AuthUser {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let unauthorized = || AppError::unauthorized("A valid access token is required.");
        let Some(keys) = req.app_data::<web::Data<TokenKeys>>() else {
            return ready(Err(AppError::internal(anyhow::anyhow!(
                "TokenKeys not registered"
            ))));
        };
        let claims = bearer_token(req).and_then(|token| keys.verify_access(token));
        ready(match claims {
            Some(claims) => {
                tracing::Span::current().record("user_id", tracing::field::display(claims.sub));
                Ok(AuthUser {
                    user_id: claims.sub,
                    session_id: claims.sid,
                    role: claims.role,
                    tier: claims.tier,
                })
            }
            None => Err(unauthorized()),
        })
    }
}
