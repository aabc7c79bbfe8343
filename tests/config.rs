//! Configuration layering and the production refusals, through `Settings::load`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use companion::config::{ConfigError, Environment, Settings};

fn config_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let vars = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load(&config_dir(), &vars)
}

#[test]
fn development_is_the_default_and_has_a_database() {
    let settings = load(&[]).unwrap();
    assert_eq!(settings.environment, Environment::Development);
    assert!(settings.database_url().contains("companion_dev"));
}

#[test]
fn env_vars_override_files_and_paas_conventions_override_both() {
    let settings = load(&[
        ("COMPANION__SERVER__PORT", "9000"),
        (
            "COMPANION__HTTP__CORS_ORIGINS",
            "https://a.example,https://b.example",
        ),
        ("COMPANION__JOBS__WORKERS", "7"),
        ("DATABASE_URL", "postgres://elsewhere/db"),
        ("REDIS_URL", "redis://cache:6379"),
    ])
    .unwrap();
    assert_eq!(settings.server.port, 9000);
    assert_eq!(settings.jobs.workers, 7);
    assert_eq!(
        settings.http.cors_origins,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(settings.database_url(), "postgres://elsewhere/db");
    assert!(settings.redis.url.is_some());

    let settings = load(&[("COMPANION__SERVER__PORT", "9000"), ("PORT", "3000")]).unwrap();
    assert_eq!(settings.server.port, 3000);
}

#[test]
fn production_requires_a_database_url() {
    let err = load(&[
        ("COMPANION_ENV", "production"),
        (
            "COMPANION__AUTH__JWT_SECRET",
            "a-real-secret-that-is-long-enough-123456",
        ),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("DATABASE_URL"), "{err}");
}

#[test]
fn production_refuses_the_development_secret_and_short_secrets() {
    let err = load(&[
        ("COMPANION_ENV", "production"),
        ("DATABASE_URL", "postgres://db/companion"),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("JWT_SECRET"), "{err}");
    assert!(!err.to_string().contains("insecure-dev"), "{err}");

    let err = load(&[
        ("COMPANION_ENV", "production"),
        ("DATABASE_URL", "postgres://db/companion"),
        ("COMPANION__AUTH__JWT_SECRET", "short"),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("32"), "{err}");

    let ok = load(&[
        ("COMPANION_ENV", "production"),
        ("DATABASE_URL", "postgres://db/companion"),
        (
            "COMPANION__AUTH__JWT_SECRET",
            "a-real-secret-that-is-long-enough-123456",
        ),
    ])
    .unwrap();
    assert_eq!(ok.server.host, "0.0.0.0");
}

#[test]
fn secrets_do_not_print() {
    let settings = load(&[
        ("DATABASE_URL", "postgres://user:hunter2@db/x"),
        ("COMPANION__STORAGE__URL", "s3://bucket/prefix"),
        (
            "COMPANION__STORAGE__OPTIONS__AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI",
        ),
    ])
    .unwrap();
    let printed = format!("{settings:?}");
    assert!(!printed.contains("hunter2"));
    assert!(!printed.contains("insecure-dev-secret"));
    assert!(!printed.contains("wJalrXUtnFEMI"));
    assert!(
        settings
            .storage
            .options
            .contains_key("aws_secret_access_key")
    );
}

#[test]
fn presigned_urls_live_at_most_seven_days_and_store_options_must_be_known() {
    let err = load(&[("COMPANION__STORAGE__PRESIGN_SECS", "604801")]).unwrap_err();
    assert!(err.to_string().contains("storage.presign_secs"), "{err}");
    let settings = load(&[("COMPANION__STORAGE__PRESIGN_SECS", "300")]).unwrap();
    assert_eq!(settings.storage.presign_secs, 300);

    let mut settings = load(&[("COMPANION__STORAGE__URL", "s3://bucket")]).unwrap();
    settings
        .storage
        .options
        .insert("aws_no_such_option".to_owned(), "x".to_owned().into());
    let err = companion::platform::storage::Storage::from_settings(&settings.storage)
        .err()
        .unwrap();
    assert!(err.to_string().contains("aws_no_such_option"), "{err}");
    // The local stores take no options: a leftover is a mistake worth saying.
    settings.storage.url = "memory://".to_owned();
    let err = companion::platform::storage::Storage::from_settings(&settings.storage)
        .err()
        .unwrap();
    assert!(err.to_string().contains("storage.options"), "{err}");
}

#[test]
fn unknown_environment_is_a_clear_error() {
    let err = load(&[("COMPANION_ENV", "staging")]).unwrap_err();
    assert!(err.to_string().contains("COMPANION_ENV"));
}

#[test]
fn the_offline_engine_is_the_default_and_a_remote_model_needs_its_address() {
    let settings = load(&[]).unwrap();
    assert_eq!(
        settings.llm.provider,
        companion::config::LlmProvider::Offline
    );
    let err = load(&[("COMPANION__LLM__PROVIDER", "openai")]).unwrap_err();
    assert!(err.to_string().contains("llm.base_url"), "{err}");
    let settings = load(&[
        ("COMPANION__LLM__PROVIDER", "ollama"),
        ("COMPANION__LLM__BASE_URL", "http://127.0.0.1:11434"),
        ("COMPANION__LLM__MODEL", "llama3.2"),
        ("COMPANION__LLM__API_KEY", "sk-secret-value"),
    ])
    .unwrap();
    assert!(!format!("{settings:?}").contains("sk-secret-value"));
}

#[test]
fn cors_origins_must_be_origins() {
    for bad in [
        "[\"https://app.example\"]",
        "https://app.example/",
        "https://app.example/path",
        "app.example",
        "*",
        "https://",
    ] {
        let err = load(&[("COMPANION__HTTP__CORS_ORIGINS", bad)]).unwrap_err();
        assert!(
            err.to_string().contains("http.cors_origins"),
            "{bad}: {err}"
        );
    }
    for good in [
        "https://app.example",
        "http://localhost:5173",
        "http://[::1]:8080",
    ] {
        let settings = load(&[("COMPANION__HTTP__CORS_ORIGINS", good)]).unwrap();
        assert_eq!(settings.http.cors_origins, [good]);
    }
}
