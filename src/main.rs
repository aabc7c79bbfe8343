//! The `companion` command: reads configuration, sets up logging, and runs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use companion::{Application, Settings, platform};

/// Companion — backend for AI companion products.
///
/// Configuration comes from config/default.toml, config/<COMPANION_ENV>.toml,
/// COMPANION__SECTION__KEY variables and PORT / DATABASE_URL / REDIS_URL.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Folder holding default.toml and the environment overlays.
    #[arg(
        long,
        env = "COMPANION_CONFIG_DIR",
        default_value = "config",
        global = true
    )]
    config_dir: PathBuf,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server and the job workers (the default). Applies pending migrations
    /// first, under an advisory lock; stops gracefully on SIGTERM or Ctrl-C.
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Operator tools.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Back up the database (one consistent pg_dump) and every file of the object store to
    /// a folder or an object-store URL (s3://bucket/prefix, file:///path). Needs the
    /// PostgreSQL client tools. The location must not hold a backup already.
    Backup {
        /// Where to write the backup: a folder or an object-store URL.
        #[arg(long)]
        to: String,
    },
    /// Replace the database and the object store's files with a backup, apply pending
    /// migrations, then erase again every restored account that was erased since (the
    /// erasure ledger stays with the database). Stop the server instances first.
    Restore {
        /// The backup: a folder or an object-store URL.
        #[arg(long)]
        from: String,
    },
    /// Set an account's role and/or subscription tier. A role change ends the account's
    /// sessions. Recorded in the audit log.
    SetUser {
        /// The account's email address.
        #[arg(long)]
        email: String,
        /// user, moderator or admin.
        #[arg(long)]
        role: Option<String>,
        /// free, premium or enterprise (billing keeps it, as an operator's grant).
        #[arg(long)]
        tier: Option<String>,
        /// When a paid tier lapses back to free (RFC 3339, e.g. 2027-01-31T00:00:00Z);
        /// without it, until changed.
        #[arg(long)]
        valid_until: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Fill the database with demo data for load tests: accounts `demo<N>@example.com`
    /// (password `demo-password-2026`), public characters, and conversations of alternating
    /// messages, written set-wise by PostgreSQL. Running it again adds only what is missing.
    SeedDemo {
        /// Demo accounts.
        #[arg(long, default_value_t = 10_000)]
        users: i64,
        /// Demo characters.
        #[arg(long, default_value_t = 1_000)]
        characters: i64,
        /// Messages in all, spread evenly over the conversations.
        #[arg(long, default_value_t = 1_000_000)]
        messages: i64,
        /// Conversations per account.
        #[arg(long, default_value_t = 2)]
        conversations: i64,
    },
    /// Print the SQL an anonymous `GET /api/v1/characters?search=…` runs for its page, with
    /// the values inlined: for `EXPLAIN` and for benchmarking the same query with pgbench.
    SearchSql {
        /// The search text.
        #[arg(long)]
        search: String,
        /// The page size.
        #[arg(long, default_value_t = 20)]
        size: i64,
    },
    /// Print the SQL a first page of `GET /api/v1/conversations/{id}/messages` runs, with the
    /// values inlined: for `EXPLAIN` and for benchmarking the same statements with pgbench.
    HistorySql {
        /// The conversation.
        #[arg(long)]
        conversation: uuid::Uuid,
        /// Its owner.
        #[arg(long)]
        user: uuid::Uuid,
        /// Its active leaf (the newest message of the branch shown).
        #[arg(long)]
        leaf: uuid::Uuid,
        /// The page size.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let vars: HashMap<String, String> = std::env::vars().collect();
    let settings = match Settings::load(&cli.config_dir, &vars) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("companion: {e}");
            return ExitCode::from(2);
        }
    };
    platform::telemetry::init(&settings.telemetry);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("companion: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(settings).await,
            Command::Migrate => migrate(settings).await,
            Command::Admin(command) => admin(settings, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "companion stopped with an error");
            eprintln!("companion: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    raise_open_file_limit();
    let app = Application::build(settings).await?;
    let stop = app.stop_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested; finishing in-flight work");
        stop.stop().await;
    });
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Every socket (clients, WebSockets, PostgreSQL, Redis) is an open file, and service
/// managers often start a process with a soft limit of 1,024. The soft limit is raised to
/// the hard limit, which only the operator can set, as Go's runtime and nginx do.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open file limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open file limit"),
    }
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let url = settings.database_url().to_owned();
    let applied = tokio::task::spawn_blocking(move || platform::migrate::run(&url)).await??;
    if applied.is_empty() {
        println!("database is up to date");
    }
    for name in applied {
        println!("applied {name}");
    }
    Ok(())
}

async fn admin(settings: Settings, command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Backup { to } => {
            let media = platform::storage::Storage::from_settings(&settings.storage)?;
            let to = platform::backup::location(&to)?;
            let manifest = platform::backup::backup(settings.database_url(), &media, &to).await?;
            println!(
                "backed up schema version {}: database {} bytes, {} files ({} bytes)",
                manifest.schema_version,
                manifest.database_bytes,
                manifest.objects,
                manifest.object_bytes
            );
            Ok(())
        }
        AdminCommand::Restore { from } => restore(settings, &from).await,
        AdminCommand::SeedDemo {
            users,
            characters,
            messages,
            conversations,
        } => seed_demo(settings, users, characters, messages, conversations).await,
        AdminCommand::SearchSql { search, size } => {
            println!(
                "{}",
                companion::modules::catalog::search_statement(&search, size)
            );
            Ok(())
        }
        AdminCommand::HistorySql {
            conversation,
            user,
            leaf,
            limit,
        } => {
            println!(
                "{}",
                companion::modules::chat::history_statements(conversation, user, leaf, limit)
            );
            Ok(())
        }
        AdminCommand::SetUser {
            email,
            role,
            tier,
            valid_until,
        } => {
            if role.is_none() && tier.is_none() {
                anyhow::bail!("nothing to change: give --role and/or --tier");
            }
            let platform = platform::Platform::new(settings)?;
            let media = companion::modules::media::Media::new(&platform);
            let billing = companion::modules::billing::Billing::new(&platform, media.directory())?;
            let identity = companion::modules::identity::Identity::new(
                &platform,
                media.directory(),
                billing.subscriptions(),
            );
            identity
                .set_user(&email, role.as_deref(), tier.as_deref(), valid_until)
                .await
                .map_err(|e| match e {
                    companion::modules::identity::IdentityError::UnknownAccount => {
                        anyhow::anyhow!("no account has the email {email}")
                    }
                    companion::modules::identity::IdentityError::Invalid(fields) => {
                        anyhow::anyhow!(
                            "{}",
                            platform::http::AppError::from(
                                companion::modules::identity::IdentityError::Invalid(fields)
                            )
                        )
                    }
                    other => anyhow::Error::from(other),
                })?;
            println!("updated {email}");
            Ok(())
        }
    }
}

/// Demo data for load tests, each module writing its own tables.
async fn seed_demo(
    settings: Settings,
    users: i64,
    characters: i64,
    messages: i64,
    conversations: i64,
) -> anyhow::Result<()> {
    use companion::modules::{catalog, chat, identity};
    if users < 1 || characters < 1 || conversations < 1 || messages < 0 {
        anyhow::bail!("give at least one user, one character and one conversation per user");
    }
    migrate(settings.clone()).await?;
    let db = platform::db::Db::new(settings.database_url(), &settings.database);
    let started = std::time::Instant::now();
    let people = identity::seed_demo_users(&db, users).await?;
    println!("{} demo users ({:.1?})", people.len(), started.elapsed());
    let cast = catalog::seed_demo_characters(&db, characters, people.clone()).await?;
    println!("{} demo characters ({:.1?})", cast.len(), started.elapsed());
    let cast: Vec<_> = cast.into_iter().map(|c| (c.id, c.name)).collect();
    let length = (messages / (users * conversations)).max(1);
    let written = chat::seed_demo_conversations(&db, &people, &cast, conversations, length).await?;
    println!(
        "{} new messages: {conversations} conversations of {length} per user ({:.1?})",
        written,
        started.elapsed()
    );
    Ok(())
}

/// Restores the data, applies migrations, then erases again the accounts of the erasure
/// ledger (the application's modules do it, as the erasure job would).
async fn restore(mut settings: Settings, from: &str) -> anyhow::Result<()> {
    let media = platform::storage::Storage::from_settings(&settings.storage)?;
    let source = platform::backup::location(from)?;
    let manifest = platform::backup::restore(settings.database_url(), &media, &source).await?;
    println!(
        "restored the backup of {} (schema version {}, {} files)",
        manifest.created_at, manifest.schema_version, manifest.objects
    );
    // Migrations run as the application is built; it listens on a port of its own and is
    // stopped once the erasures are done.
    settings.server.port = 0;
    settings.database.migrate_on_start = true;
    let app = Application::build(settings).await?;
    let erased = app.privacy().reapply_erasures().await;
    let stop = app.stop_handle();
    tokio::spawn(async move { stop.stop().await });
    app.run_until_stopped().await?;
    println!("erased again: {} account(s) of the erasure ledger", erased?);
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
