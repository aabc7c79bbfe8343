//! The composition root: builds the platform, wires the modules, mounts the routes, binds
//! the port and starts the job workers. Nothing else in the crate knows how the pieces fit.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{ErrorHandlers, from_fn};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing_actix_web::TracingLogger;

use crate::config::Settings;
use crate::modules::admin::Admin;
use crate::modules::billing::{AuditNote, Billing};
use crate::modules::catalog::Catalog;
use crate::modules::chat::Chat;
use crate::modules::identity::Identity;
use crate::modules::identity::{AuditEntry, Outcome};
use crate::modules::media::Media;
use crate::modules::privacy::Privacy;
use crate::platform::jobs::{JobRegistry, JobRunner};
use crate::platform::personal::PersonalData;
use crate::platform::{Platform, http, migrate, ops};

type RouteConfig = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// Builds an [`Application`]. Tests use it to add routes or job handlers of their own.
pub struct ApplicationBuilder {
    settings: Settings,
    registry: JobRegistry,
    api_routes: Vec<RouteConfig>,
}

/// A bound, ready-to-run server with its job workers.
pub struct Application {
    port: u16,
    route_table: Vec<http::RouteEntry>,
    server: Server,
    runner: JobRunner,
    jobs_stop: CancellationToken,
    platform: Platform,
    identity: Identity,
    catalog: Catalog,
    chat: Chat,
    privacy: Privacy,
    personal_data: Vec<Arc<dyn PersonalData>>,
}

/// Stops a running [`Application`] gracefully (what SIGTERM does).
#[derive(Clone)]
pub struct StopHandle {
    server: ServerHandle,
    jobs: CancellationToken,
    chat: Chat,
    grace: std::time::Duration,
}

impl StopHandle {
    /// Stops accepting connections, lets in-flight requests and running jobs finish within
    /// `server.shutdown_timeout_secs`, and returns when the HTTP server has stopped.
    /// Replies being generated end first, as `interrupted` with what they had, so requests
    /// waiting for them can answer.
    pub async fn stop(&self) {
        self.jobs.cancel();
        self.chat.shutdown(self.grace).await;
        self.server.stop(true).await;
    }
}

impl ApplicationBuilder {
    /// Registers job handlers and schedules (in addition to the modules').
    pub fn jobs(mut self, register: impl FnOnce(&mut JobRegistry)) -> Self {
        register(&mut self.registry);
        self
    }

    /// Mounts extra routes under `/api/v1`.
    pub fn api_routes(
        mut self,
        routes: impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static,
    ) -> Self {
        self.api_routes.push(Arc::new(routes));
        self
    }

    pub async fn build(self) -> anyhow::Result<Application> {
        let settings = self.settings;
        if settings.database.migrate_on_start {
            let url = settings.database_url().to_owned();
            let patience = std::time::Duration::from_secs(settings.database.startup_timeout_secs);
            let applied =
                tokio::task::spawn_blocking(move || migrate::run_with_patience(&url, patience))
                    .await
                    .context("migration task failed")??;
            for name in applied {
                tracing::info!(migration = %name, "migration applied");
            }
        }

        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .with_context(|| {
                format!(
                    "could not listen on {}:{}",
                    settings.server.host, settings.server.port
                )
            })?;
        let port = listener.local_addr()?.port();
        let platform = Platform::new(settings).context("could not set up the platform")?;
        let settings = platform.settings.clone();

        if settings.environment == crate::config::Environment::Production
            && settings.mail.transport == crate::config::MailTransport::Log
        {
            tracing::warn!(
                "mail.transport is \"log\": verification and password-reset emails are not sent; \
                 set COMPANION__MAIL__TRANSPORT=smtp and COMPANION__MAIL__SMTP_URL"
            );
        }

        // The modules, and the traits they lend each other.
        let media = Media::new(&platform);
        let billing =
            Billing::new(&platform, media.directory()).context("could not set up billing")?;
        let identity = Identity::new(&platform, media.directory(), billing.subscriptions());
        let sessions = identity.session_check();
        let catalog = Catalog::new(&platform, identity.audit_log(), media.directory());
        let chat = Chat::new(
            &platform,
            catalog.directory(),
            identity.people(),
            identity.experience(),
            billing.token_quota(),
        )
        .context("could not set up chat")?;
        let admin = Admin::new(
            &platform,
            identity.census(),
            billing.subscriptions(),
            chat.activity(platform.db.clone()),
        )
        .context("could not set up the admin board")?;

        let mut registry = self.registry;
        crate::platform::mail::register_jobs(&mut registry, platform.mailer.clone());
        identity.jobs(&mut registry);
        chat.jobs(&mut registry, platform.db.clone(), &platform.settings.llm);
        media.jobs(&mut registry);
        billing.jobs(&mut registry);
        // Billing announces what belongs in the audit log; identity keeps the log.
        {
            let audit = identity.audit_log();
            registry.register(crate::modules::billing::AUDIT_JOB, move |job| {
                let audit = audit.clone();
                async move {
                    let note: crate::modules::billing::AuditNote = job.payload_as()?;
                    audit.record(audit_entry(note)).await?;
                    Ok(())
                }
            });
        }
        // Media announces a deletion; whoever kept it as an avatar lets it go.
        {
            let (identity, catalog) = (identity.clone(), catalog.clone());
            registry.register(crate::modules::media::REMOVED_JOB, move |job| {
                let (identity, catalog) = (identity.clone(), catalog.clone());
                async move {
                    let id: uuid::Uuid = serde_json::from_value(job.payload["id"].clone())?;
                    identity.forget_avatar(id).await?;
                    catalog
                        .forget_avatar(id)
                        .await
                        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
                    Ok(())
                }
            });
        }
        // Each module's share of a person's data, in the order an erasure runs: identity's
        // last, since every other module's rows refer to the account.
        let privacy = Privacy::new(
            &platform,
            identity.accounts(),
            vec![
                chat.personal_data(),
                catalog.personal_data(settings.privacy.transfer_public_characters),
                media.personal_data(),
                billing.personal_data(),
                identity.personal_data(),
            ],
            vec![chat.retention()],
        );
        privacy.jobs(&mut registry);
        let personal_data = privacy.personal_data();
        chat.repair_at_start(platform.db.clone(), &platform.settings.llm);
        let grace = settings.shutdown_timeout();
        let runner = JobRunner::start(platform.db.clone(), registry, &settings.jobs, grace);
        let jobs_stop = runner.stop_token();
        admin.start_gauges(jobs_stop.clone());

        let modules = Modules {
            identity: identity.clone(),
            catalog: catalog.clone(),
            chat: chat.clone(),
            media: media.clone(),
            privacy: privacy.clone(),
            billing: billing.clone(),
            admin,
        };
        // The route table, recorded once (each worker mounts the same routes again).
        let mut route_table = Vec::new();
        let _ = App::new()
            .configure(|cfg| ops::routes(&mut http::Routes::new(cfg, "", &mut route_table)))
            .service(web::scope(API_PREFIX).configure(|cfg| {
                modules.mount(&mut http::Routes::new(cfg, API_PREFIX, &mut route_table));
            }));
        route_table.sort_by(|a, b| (&a.path, a.method.as_str()).cmp(&(&b.path, b.method.as_str())));
        // Built once, and only where it is served.
        let api_document = settings
            .http
            .api_docs_enabled(settings.environment)
            .then(api_document);

        let server = {
            let platform = platform.clone();
            let api_routes = self.api_routes;
            let web_client = http::WebClient::load(
                &settings.server.static_dir,
                &[(
                    "deletion-grace-days",
                    settings.privacy.deletion_grace_days.to_string(),
                )],
            )?;
            let body_limits = http::BodyTimeouts {
                idle: Duration::from_millis(settings.server.body_idle_timeout_ms.max(1)),
                total: Duration::from_secs(settings.server.body_timeout_secs.max(1)),
            };
            let mut server = HttpServer::new(move || {
                let api_routes = api_routes.clone();
                let modules = modules.clone();
                let web_client = web_client.clone();
                let app = App::new()
                    .app_data(web::Data::new(platform.clone()))
                    .app_data(web::Data::from(platform.tokens.clone()))
                    .app_data(web::Data::from(platform.metrics.clone()))
                    .app_data(web::Data::from(sessions.clone()))
                    .app_data(http::json_config(platform.settings.http.json_limit_bytes))
                    .app_data(http::path_config())
                    .app_data(http::query_config())
                    .wrap(from_fn(move |req, next| {
                        http::body_timeout(body_limits, req, next)
                    }))
                    .wrap(ErrorHandlers::new().default_handler(http::envelope_errors))
                    .wrap(from_fn(http::record_metrics))
                    .wrap(cors(&platform.settings))
                    .wrap(from_fn(http::security_headers))
                    .wrap(TracingLogger::<http::CompanionRootSpan>::new())
                    .wrap(from_fn(http::request_id))
                    .configure(|cfg| ops::routes(&mut http::Routes::new(cfg, "", &mut Vec::new())))
                    .service(
                        web::scope(API_PREFIX)
                            .wrap(from_fn(http::rate_limit))
                            .wrap(from_fn(http::refuse_nul_query))
                            .configure(|cfg| {
                                modules.mount(&mut http::Routes::new(
                                    cfg,
                                    API_PREFIX,
                                    &mut Vec::new(),
                                ));
                            })
                            .configure(move |cfg| {
                                for routes in &api_routes {
                                    routes(cfg);
                                }
                            })
                            .default_service(web::to(http::not_found)),
                    );
                let app = if let Some(api_document) = &api_document {
                    app.service(
                        web::resource("/docs").route(web::get().to(|| async { docs_redirect() })),
                    )
                    .service(
                        utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
                            .url("/openapi.json", api_document.clone()),
                    )
                } else {
                    app
                };
                app.configure(|cfg| web_client.routes(cfg))
                    .default_service(web::to(http::not_found))
            })
            // Streamed replies are many small writes: send each at once (no Nagle delay).
            .tcp_nodelay(true)
            .client_request_timeout(Duration::from_millis(
                settings.server.request_head_timeout_ms.max(1),
            ))
            .listen(listener)?
            .disable_signals()
            .shutdown_timeout(settings.server.shutdown_timeout_secs);
            if settings.server.workers > 0 {
                server = server.workers(settings.server.workers);
            }
            server.run()
        };
        tracing::info!(
            port,
            environment = settings.environment.as_str(),
            "listening"
        );
        Ok(Application {
            port,
            route_table,
            server,
            runner,
            jobs_stop,
            platform,
            identity,
            catalog,
            chat,
            privacy,
            personal_data,
        })
    }
}

/// Where the API is mounted.
const API_PREFIX: &str = "/api/v1";

/// The modules that serve HTTP, as each worker mounts them.
#[derive(Clone)]
struct Modules {
    identity: Identity,
    catalog: Catalog,
    chat: Chat,
    media: Media,
    privacy: Privacy,
    billing: Billing,
    admin: Admin,
}

impl Modules {
    fn mount(&self, routes: &mut http::Routes) {
        self.identity.routes(routes);
        self.catalog.routes(routes);
        self.chat.routes(routes);
        self.media.routes(routes);
        self.privacy.routes(routes);
        self.billing.routes(routes);
        self.admin.routes(routes);
    }
}

/// The OpenAPI document: the operations endpoints, then each module's API under `/api/v1`.
pub fn api_document() -> utoipa::openapi::OpenApi {
    http::document(vec![
        ("", ops::api_docs()),
        (API_PREFIX, Identity::api_docs()),
        (API_PREFIX, Catalog::api_docs()),
        (API_PREFIX, Chat::api_docs()),
        (API_PREFIX, Media::api_docs()),
        (API_PREFIX, Privacy::api_docs()),
        (API_PREFIX, Billing::api_docs()),
        (API_PREFIX, Admin::api_docs()),
    ])
}

/// `/docs` → `/docs/`, where the reference's relative asset paths resolve.
fn docs_redirect() -> actix_web::HttpResponse {
    actix_web::HttpResponse::PermanentRedirect()
        .insert_header((actix_web::http::header::LOCATION, "/docs/"))
        .finish()
}

/// Billing's note as an audit-log entry.
fn audit_entry(note: AuditNote) -> AuditEntry {
    let outcome = match note.outcome.as_str() {
        "success" => Outcome::Success,
        "denied" => Outcome::Denied,
        _ => Outcome::Failure,
    };
    let mut entry = AuditEntry::new(note.action, outcome).change(note.old_value, note.new_value);
    if let Some(actor) = note.actor_id {
        entry = entry.actor(actor);
    }
    if let Some(subject) = note.subject_id {
        entry = entry.subject(subject);
    }
    entry.ip = note.ip;
    entry.user_agent = note.user_agent;
    entry
}

fn cors(settings: &Settings) -> actix_cors::Cors {
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers(["authorization", "content-type", "accept", "x-request-id"])
        .expose_headers([
            "x-request-id",
            "retry-after",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "etag",
            "content-range",
        ])
        .max_age(3600);
    for origin in &settings.http.cors_origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

impl Application {
    pub fn builder(settings: Settings) -> ApplicationBuilder {
        ApplicationBuilder {
            settings,
            registry: JobRegistry::new(),
            api_routes: Vec::new(),
        }
    }

    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::builder(settings).build().await
    }

    /// Every API and operations route the server mounted (the OpenAPI test and the attack
    /// suite walk it).
    pub fn route_table(&self) -> &[http::RouteEntry] {
        &self.route_table
    }

    /// The bound port (useful when the configured port was 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The running catalog module (tests use its directory as chat will).
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The running identity module (tests use it as operators use the CLI).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The running privacy module (tests run its retention job directly).
    pub fn privacy(&self) -> &Privacy {
        &self.privacy
    }

    /// Every module's share of a person's data.
    pub fn personal_data(&self) -> &[Arc<dyn PersonalData>] {
        &self.personal_data
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            server: self.server.handle(),
            jobs: self.jobs_stop.clone(),
            chat: self.chat.clone(),
            grace: self.platform.settings.shutdown_timeout(),
        }
    }

    /// Serves until stopped, then waits for the job workers to wind down.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        self.runner.shutdown().await;
        served
    }
}
