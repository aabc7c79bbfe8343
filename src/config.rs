//! Settings, built once in `main` (or by a test) and passed down; never global.
//!
//! Layers, later wins: `config/default.toml`, `config/<env>.toml` (env from `COMPANION_ENV`,
//! default `development`), `COMPANION__SECTION__KEY` variables, then the PaaS conventions
//! `PORT`, `DATABASE_URL` and `REDIS_URL`. Secrets are [`SecretString`]s so they never print.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Prefix that marks a secret as a development placeholder.
const DEV_SECRET_PREFIX: &str = "insecure-dev-";
const MIN_PRODUCTION_SECRET_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Test,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Test => "test",
            Self::Production => "production",
        }
    }
}

impl std::str::FromStr for Environment {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "development" | "dev" => Ok(Self::Development),
            "test" => Ok(Self::Test),
            "production" | "prod" => Ok(Self::Production),
            other => Err(ConfigError::Invalid(format!(
                "COMPANION_ENV is \"{other}\"; use development, test or production"
            ))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] config::ConfigError),
    #[error("{0}")]
    Invalid(String),
}

/// Whether `value` is a web origin: `http` or `https`, `://`, a host and an optional port.
fn is_origin(value: &str) -> bool {
    let Some(rest) = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    #[serde(skip, default = "default_environment")]
    pub environment: Environment,
    pub server: ServerSettings,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    #[serde(default)]
    pub redis: RedisSettings,
    pub storage: StorageSettings,
    pub auth: AuthSettings,
    pub jobs: JobSettings,
    pub telemetry: TelemetrySettings,
    #[serde(default)]
    pub metrics: MetricsSettings,
    pub mail: MailSettings,
    pub ratelimit: RateLimitSettings,
    pub llm: LlmSettings,
    pub websocket: WebSocketSettings,
    pub media: MediaSettings,
    pub privacy: PrivacySettings,
    pub plans: Plans,
    #[serde(default)]
    pub billing: BillingSettings,
}

fn default_environment() -> Environment {
    Environment::Development
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub shutdown_timeout_secs: u64,
    pub workers: usize,
    /// Where people reach the site; links in emails start with it.
    pub public_url: String,
    /// The browser client's directory (`index.html` and `assets/`).
    pub static_dir: std::path::PathBuf,
    /// A client must send a request's line and headers within this (else 408, closed).
    pub request_head_timeout_ms: u64,
    /// A request body that pauses this long is abandoned (408, connection closed).
    pub body_idle_timeout_ms: u64,
    /// A request body must have arrived whole within this.
    pub body_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub json_limit_bytes: usize,
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Where the client's address comes from; see [`ClientIpSource`].
    pub client_ip_source: ClientIpSource,
    /// Serve `/openapi.json` and the reference at `/docs`. Unset: everywhere but production.
    #[serde(default)]
    pub api_docs: Option<bool>,
}

impl HttpSettings {
    pub fn api_docs_enabled(&self, environment: Environment) -> bool {
        self.api_docs
            .unwrap_or(environment != Environment::Production)
    }
}

/// Where the client's address is read. Only trust a header when a proxy you run (or your
/// PaaS's router) sets it and clients cannot reach the server around that proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientIpSource {
    /// The TCP peer address.
    Socket,
    /// The last (rightmost) address of `X-Forwarded-For`: the one the trusted proxy added.
    XForwardedFor,
    /// Fly.io's `Fly-Client-IP`.
    FlyClientIp,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub url: Option<SecretString>,
    pub pool_size: u32,
    pub connect_timeout_ms: u64,
    pub migrate_on_start: bool,
    pub startup_timeout_secs: u64,
}

impl DatabaseSettings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RedisSettings {
    pub url: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StorageSettings {
    pub url: String,
    /// When more than 0 and the store is S3-compatible, downloads answer with a redirect to
    /// a presigned URL valid this many seconds instead of passing the bytes through.
    #[serde(default)]
    pub presign_secs: u64,
    /// Settings of the cloud store's client, by object_store's names (`aws_endpoint`,
    /// `aws_access_key_id`, `aws_secret_access_key`, `aws_region`, `aws_allow_http`, …);
    /// they override the provider's environment variables. Secrets, so they never print.
    #[serde(default)]
    pub options: BTreeMap<String, SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// `HS256` (with `jwt_secret`), `EdDSA` or `RS256` (with the key files).
    pub algorithm: String,
    pub jwt_secret: SecretString,
    /// PEM files for `EdDSA` / `RS256`.
    pub private_key_file: Option<String>,
    pub public_key_file: Option<String>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
}

impl AuthSettings {
    pub fn access_ttl(&self) -> Duration {
        Duration::from_secs(self.access_ttl_secs)
    }

    pub fn refresh_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_ttl_secs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    /// Writes each message to the log (development).
    Log,
    /// Keeps messages in memory for tests to read.
    Memory,
    /// Sends through `mail.smtp_url`.
    Smtp,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MailSettings {
    pub transport: MailTransport,
    pub from: String,
    /// `smtps://user:password@host[:port]` (implicit TLS), or `smtp://…?tls=required` for
    /// STARTTLS.
    pub smtp_url: Option<SecretString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmProvider {
    /// The built-in scripted persona responder: offline, deterministic, labelled as such.
    Offline,
    /// Any OpenAI-compatible Chat Completions server (OpenAI, Ollama's `/v1`, vLLM,
    /// llama.cpp server, LM Studio).
    Openai,
    /// Ollama's native `/api/chat`.
    Ollama,
}

/// Twice the heartbeat of a streaming reply: a live reply is never taken for an orphan.
const ORPHANED_REPLY_MIN_SECS: u64 = 10;

/// The language model replies come from.
#[derive(Debug, Clone, Deserialize)]
pub struct LlmSettings {
    pub provider: LlmProvider,
    /// `https://api.openai.com/v1` style for `openai`; `http://127.0.0.1:11434` for `ollama`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<SecretString>,
    pub connect_timeout_ms: u64,
    /// From sending the request to the first text.
    pub first_token_timeout_ms: u64,
    /// Longest silence between two pieces of text once the reply has started.
    pub idle_timeout_ms: u64,
    /// The whole reply.
    pub total_timeout_ms: u64,
    /// New attempts when the connection fails before the first token.
    pub retries: u32,
    pub max_tokens: u32,
    pub temperature: f32,
    /// The model's context window, in tokens: the prompt is cut to fit it.
    pub context_tokens: u32,
    /// The offline engine's pause between words, so its replies stream like a model's.
    pub offline_word_delay_ms: u64,
    /// A streaming reply whose heartbeat is this old lost its instance and is marked
    /// `interrupted`; the check runs this often, on one instance.
    pub orphaned_reply_secs: u64,
    /// Memory for conversations kept warm on this instance (chat's `warm`), in MiB; 0 keeps
    /// none, and every message reads its conversation from the database.
    pub warm_cache_mib: u64,
    /// A warm conversation without a message for this long is dropped.
    pub warm_idle_secs: u64,
}

/// The live connection at `/api/v1/ws`.
#[derive(Debug, Clone, Deserialize)]
pub struct WebSocketSettings {
    /// The server pings this often; a connection that misses two pongs in a row is closed.
    pub ping_interval_ms: u64,
    /// A connection that did not authenticate in the handshake must send `auth` this soon.
    pub auth_timeout_ms: u64,
    /// The largest frame (and message) a client may send.
    pub max_frame_bytes: usize,
    /// Frames waiting for a slow client before it is disconnected.
    pub send_queue: usize,
    /// Open connections one account may hold on this instance; 0 means no cap.
    pub max_per_user: usize,
    /// Frames a client may send per second, on average; 0 means no limit.
    pub frames_per_second: u32,
    /// Frames a client may send in a burst above that rate. Past it frames are refused with
    /// `RATE_LIMITED`, and a client that keeps sending as many again is disconnected (1008).
    pub frame_burst: u32,
}

/// Export, erasure and retention (GDPR articles 15, 17 and 20).
#[derive(Debug, Clone, Deserialize)]
pub struct PrivacySettings {
    /// Days between `DELETE /users/account` and the erasure; 0 erases at once.
    pub deletion_grace_days: u32,
    /// An erased creator's public characters: given to the installation (true) or deleted.
    pub transfer_public_characters: bool,
    /// The largest synchronous JSON export; a larger account gets 409 and the archive.
    pub json_export_max_bytes: u64,
    /// How long an archive can be downloaded before it is deleted.
    pub export_ttl_days: u32,
    /// One archive per user per this many hours.
    pub export_every_hours: u32,
    /// Free-tier messages older than this are deleted by the daily job; 0 keeps them.
    pub message_retention_days: u32,
}

/// Uploads: the largest file of each kind, enforced while the upload streams.
#[derive(Debug, Clone, Deserialize)]
pub struct MediaSettings {
    pub image_max_bytes: u64,
    pub audio_max_bytes: u64,
    pub video_max_bytes: u64,
    /// How often the orphan sweep runs, and how old an object without a row (or a row
    /// without its object) must be before the sweep removes it.
    pub sweep_interval_secs: u64,
    pub orphan_grace_secs: u64,
}

/// What a subscription tier gives (`[plans.free]`, `[plans.premium]`, `[plans.enterprise]`).
/// Every limit is a number where 0 means unlimited.
#[derive(Debug, Clone, Deserialize)]
pub struct Plan {
    /// The name shown to people.
    pub name: String,
    /// Every /api request, per minute (the general rate limit).
    pub requests_per_minute: u32,
    /// Language-model tokens (prompt + completion) per calendar month (UTC).
    pub monthly_tokens: u64,
    /// Bytes of uploaded media.
    pub storage_bytes: u64,
    /// Whether the user may create and import characters of their own.
    pub custom_characters: bool,
    /// The most tokens of conversation a prompt carries (capped by `llm.context_tokens`).
    pub context_tokens: u32,
    /// Price per month in the smallest unit of `billing.currency` (display only).
    pub price_cents: u64,
}

impl Plan {
    /// The storage quota in bytes (`None`: unlimited).
    pub fn storage_quota(&self) -> Option<u64> {
        (self.storage_bytes > 0).then_some(self.storage_bytes)
    }

    /// The monthly token quota (`None`: unlimited).
    pub fn token_quota(&self) -> Option<u64> {
        (self.monthly_tokens > 0).then_some(self.monthly_tokens)
    }
}

/// The three plans. Tier names are fixed (`free`, `premium`, `enterprise`); what each gives
/// is configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct Plans {
    pub free: Plan,
    pub premium: Plan,
    pub enterprise: Plan,
}

impl Plans {
    pub const TIERS: [&'static str; 3] = ["free", "premium", "enterprise"];

    /// The plan of `tier`; an unknown tier gets free's.
    pub fn get(&self, tier: &str) -> &Plan {
        match tier {
            "premium" => &self.premium,
            "enterprise" => &self.enterprise,
            _ => &self.free,
        }
    }

    pub fn all(&self) -> [(&'static str, &Plan); 3] {
        [
            ("free", &self.free),
            ("premium", &self.premium),
            ("enterprise", &self.enterprise),
        ]
    }
}

/// Billing: the currency prices are shown in, and the payment provider's webhook.
#[derive(Debug, Clone, Deserialize)]
pub struct BillingSettings {
    pub currency: String,
    /// Stripe's signing secret (`whsec_…`). Without it the webhook endpoint answers 404.
    pub webhook_secret: Option<SecretString>,
    /// How old a signed event may be (Stripe's default: five minutes).
    pub webhook_tolerance_secs: u64,
    /// Provider price ids (or lookup keys) and the tier each one buys. A price whose lookup
    /// key is a tier name needs no entry.
    #[serde(default)]
    pub prices: BTreeMap<String, String>,
    /// How often the recurring job moves lapsed subscriptions back to free.
    pub expiry_check_secs: u64,
}

impl Default for BillingSettings {
    fn default() -> Self {
        Self {
            currency: "EUR".to_owned(),
            webhook_secret: None,
            webhook_tolerance_secs: 300,
            prices: BTreeMap::new(),
            expiry_check_secs: 300,
        }
    }
}

/// Requests per period; 0 means unlimited.
#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    /// Prefix of the Redis keys (lets several deployments share one Redis).
    pub key_prefix: String,
    /// Anonymous /api requests per client address (signed-in users: their plan's rate).
    pub anonymous_per_minute: u32,
    /// Login attempts per account and client address.
    pub login_per_minute: u32,
    /// Login attempts per account from all addresses together.
    pub login_account_per_hour: u32,
    pub register_per_minute: u32,
    pub forgot_password_per_hour: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JobSettings {
    pub workers: usize,
    pub poll_interval_ms: u64,
    pub lease_secs: u64,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    pub log_level: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MetricsSettings {
    pub bearer_token: Option<SecretString>,
}

/// The longest validity S3 accepts for a presigned URL.
const MAX_PRESIGN_SECS: u64 = 7 * 24 * 3600;

impl Settings {
    /// Loads settings from `config_dir` and the given environment variables (normally
    /// `std::env::vars()`; tests pass their own map so the process environment cannot leak in).
    pub fn load(config_dir: &Path, vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let environment: Environment = vars
            .get("COMPANION_ENV")
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(Environment::Development);

        let companion_vars: HashMap<String, String> = vars
            .iter()
            .filter(|(k, _)| k.starts_with("COMPANION__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();

        let mut builder = config::Config::builder()
            .add_source(config::File::from(config_dir.join("default.toml")))
            .add_source(
                config::File::from(config_dir.join(format!("{}.toml", environment.as_str())))
                    .required(false),
            )
            .add_source(
                config::Environment::with_prefix("COMPANION")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("http.cors_origins")
                    .try_parsing(true)
                    .source(Some(companion_vars)),
            );
        for (var, key) in [
            ("PORT", "server.port"),
            ("DATABASE_URL", "database.url"),
            ("REDIS_URL", "redis.url"),
        ] {
            builder = builder.set_override_option(key, vars.get(var).cloned())?;
        }

        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.environment = environment;
        settings.validate()?;
        Ok(settings)
    }

    /// Refuses settings that cannot work, and in production, settings that are unsafe.
    /// Each error is one line naming the setting to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: &str| Err(ConfigError::Invalid(msg.to_owned()));
        if self.llm.orphaned_reply_secs < ORPHANED_REPLY_MIN_SECS {
            return invalid(
                "llm.orphaned_reply_secs must be at least 10 (twice the streaming heartbeat)",
            );
        }
        if self.http.json_limit_bytes == 0 {
            return invalid("http.json_limit_bytes must be greater than 0");
        }
        if let Some(origin) = self.http.cors_origins.iter().find(|o| !is_origin(o)) {
            return Err(ConfigError::Invalid(format!(
                "http.cors_origins: {origin:?} is not an origin like https://app.example.com \
                 (scheme and host, an optional port, nothing after)"
            )));
        }
        if self.media.image_max_bytes == 0
            || self.media.audio_max_bytes == 0
            || self.media.video_max_bytes == 0
        {
            return invalid("media.*_max_bytes must be greater than 0");
        }
        if self.storage.presign_secs > MAX_PRESIGN_SECS {
            return invalid("storage.presign_secs must be at most 604800 (seven days, S3's limit)");
        }
        if self.media.sweep_interval_secs == 0 {
            return invalid("media.sweep_interval_secs must be greater than 0");
        }
        if self.database.pool_size == 0 {
            return invalid("database.pool_size must be greater than 0");
        }
        if self.jobs.lease_secs == 0 || self.jobs.poll_interval_ms == 0 {
            return invalid("jobs.lease_secs and jobs.poll_interval_ms must be greater than 0");
        }
        let url_missing = self
            .database
            .url
            .as_ref()
            .is_none_or(|url| url.expose_secret().trim().is_empty());
        if url_missing {
            return invalid(
                "DATABASE_URL is not set (or COMPANION__DATABASE__URL); the server needs PostgreSQL",
            );
        }
        if self.auth.access_ttl_secs == 0 || self.auth.refresh_ttl_secs == 0 {
            return invalid(
                "auth.access_ttl_secs and auth.refresh_ttl_secs must be greater than 0",
            );
        }
        if self.llm.provider != LlmProvider::Offline
            && (self.llm.base_url.trim().is_empty() || self.llm.model.trim().is_empty())
        {
            return invalid(
                "llm.provider needs llm.base_url and llm.model (COMPANION__LLM__BASE_URL, COMPANION__LLM__MODEL)",
            );
        }
        if self.llm.max_tokens == 0 || self.llm.context_tokens <= self.llm.max_tokens {
            return invalid("llm.context_tokens must be larger than llm.max_tokens (> 0)");
        }
        if self
            .plans
            .all()
            .iter()
            .any(|(_, plan)| plan.context_tokens <= self.llm.max_tokens)
        {
            return invalid("plans.*.context_tokens must be larger than llm.max_tokens");
        }
        if self
            .billing
            .prices
            .values()
            .any(|tier| !matches!(tier.as_str(), "premium" | "enterprise"))
        {
            return invalid("billing.prices may only name the tiers premium and enterprise");
        }
        if self.mail.transport == MailTransport::Smtp && self.mail.smtp_url.is_none() {
            return invalid("mail.transport is smtp but COMPANION__MAIL__SMTP_URL is not set");
        }
        if self.environment == Environment::Production
            && self.mail.transport == MailTransport::Memory
        {
            return invalid(
                "mail.transport = \"memory\" is for tests; use smtp or log in production",
            );
        }
        let uses_secret = self.auth.algorithm.eq_ignore_ascii_case("HS256");
        if self.environment == Environment::Production && uses_secret {
            let secret = self.auth.jwt_secret.expose_secret();
            if secret.starts_with(DEV_SECRET_PREFIX) {
                return invalid(
                    "COMPANION__AUTH__JWT_SECRET is a development secret; set a random production secret",
                );
            }
            if secret.len() < MIN_PRODUCTION_SECRET_LEN {
                return invalid("COMPANION__AUTH__JWT_SECRET must be at least 32 characters");
            }
        }
        Ok(())
    }

    /// The database URL; [`Settings::validate`] guarantees it is present.
    pub fn database_url(&self) -> &str {
        self.database
            .url
            .as_ref()
            .map(|u| u.expose_secret())
            .unwrap_or_default()
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.server.shutdown_timeout_secs)
    }
}
