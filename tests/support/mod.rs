//! The integration-test harness.
//!
//! - Every test gets a **fresh database**, cloned (`CREATE DATABASE … TEMPLATE …`) from a
//!   template that is migrated once per migration set; the clone is dropped when the test ends.
//! - The real server runs in-process on `127.0.0.1:0` and is driven with a real HTTP client.
//! - `DATABASE_URL` names the PostgreSQL server to use (any database on it; default
//!   `postgres://postgres@127.0.0.1:5432/postgres`), `REDIS_URL` the Redis server.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod chat;
pub mod fake_llm;
pub mod images;
pub mod personal;
pub mod process;
pub mod proxy;
pub mod s3;
pub mod ws;

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use companion::{Application, ApplicationBuilder, Settings, StopHandle};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The URL of database `name` on the test server. A local server is reached without TLS
/// (unless `DATABASE_URL` asks otherwise): nothing to protect on the loopback, and libpq's
/// OpenSSL state is then never in use by a pool thread when a test process exits (OpenSSL's
/// exit-time cleanup racing such a thread crashed a test binary after its tests passed).
pub fn database_url(name: &str) -> String {
    let mut url = url::Url::parse(&admin_url()).expect("DATABASE_URL is a URL");
    url.set_path(name);
    let local = matches!(
        url.host_str(),
        Some("127.0.0.1" | "localhost" | "::1" | "[::1]")
    );
    if local && !url.query_pairs().any(|(k, _)| k == "sslmode") {
        url.query_pairs_mut().append_pair("sslmode", "disable");
    }
    url.to_string()
}

fn admin_client() -> postgres::Client {
    postgres::Client::connect(&admin_url(), postgres::NoTls)
        .expect("PostgreSQL must be reachable at DATABASE_URL (scripts/test starts one)")
}

/// Name of the template for the current migrations: a new migration means a new template.
fn template_name() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut hash = Sha256::new();
    for file in files {
        hash.update(file.file_name().unwrap().as_encoded_bytes());
        hash.update(std::fs::read(&file).unwrap());
    }
    let digest = hash.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("companion_template_{hex}")
}

/// Creates and migrates the template once; safe across parallel test processes.
fn template() -> &'static str {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let name = template_name();
        let mut admin = admin_client();
        admin.execute("SELECT pg_advisory_lock(7265)", &[]).unwrap();
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .unwrap()
            .is_some();
        if !exists {
            // Build under a scratch name and rename when complete, so a crash never leaves a
            // half-migrated template behind.
            let building = format!("{name}_building");
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
                .unwrap();
            admin
                .batch_execute(&format!("CREATE DATABASE {building}"))
                .unwrap();
            companion::platform::migrate::run(&database_url(&building)).unwrap();
            admin
                .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
                .unwrap();
        }
        admin
            .execute("SELECT pg_advisory_unlock(7265)", &[])
            .unwrap();
        name
    })
}

/// A database of its own for one test; dropped with the value.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A migrated database (a clone of the template).
    pub async fn fresh() -> Self {
        tokio::task::spawn_blocking(|| {
            let template = template();
            Self::create(&format!("TEMPLATE {template}"))
        })
        .await
        .unwrap()
    }

    /// An empty database: no migrations applied.
    pub async fn empty() -> Self {
        tokio::task::spawn_blocking(|| Self::create(""))
            .await
            .unwrap()
    }

    fn create(options: &str) -> Self {
        let name = format!("companion_test_{}", uuid::Uuid::new_v4().simple());
        admin_client()
            .batch_execute(&format!("CREATE DATABASE {name} {options}"))
            .unwrap();
        Self {
            url: database_url(&name),
            name,
        }
    }

    /// Test settings pointing at this database.
    pub fn settings(&self) -> Settings {
        test_settings(&self.url, &[])
    }
}

impl TestDb {
    /// Runs `work` with a client of this database (on a thread of its own: the synchronous
    /// client runs a runtime, which cannot start inside the test's).
    pub fn with_client<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut postgres::Client) -> T + Send + 'static,
    ) -> T {
        let url = self.url.clone();
        std::thread::spawn(move || {
            work(&mut postgres::Client::connect(&url, postgres::NoTls).unwrap())
        })
        .join()
        .unwrap()
    }
}

impl TestDb {
    /// Runs `sql` and returns the first column of every row as text.
    pub fn query_column(&self, sql: &str) -> Vec<String> {
        let sql = format!("SELECT q.c::text FROM ({sql}) q(c)");
        self.with_client(move |client| {
            client
                .query(&sql, &[])
                .unwrap()
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect()
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A plain thread: Drop may run inside an async runtime.
        let _ = std::thread::spawn(move || {
            if let Ok(mut admin) = postgres::Client::connect(&admin_url(), postgres::NoTls) {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        })
        .join();
    }
}

/// Settings as the test environment defines them, with `vars` applied like env variables.
pub fn test_settings(database_url: &str, vars: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = HashMap::from([
        ("COMPANION_ENV".to_owned(), "test".to_owned()),
        ("DATABASE_URL".to_owned(), database_url.to_owned()),
    ]);
    for (k, v) in vars {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    Settings::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config"), &env).unwrap()
}

/// A running server and a client for it.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub platform: companion::platform::Platform,
    pub identity: companion::modules::identity::Identity,
    pub catalog: companion::modules::catalog::Catalog,
    pub privacy: companion::modules::privacy::Privacy,
    /// Every module's share of a person's data (by `name()`).
    pub personal_data: Vec<std::sync::Arc<dyn companion::platform::personal::PersonalData>>,
    /// Every API and operations route the server mounted.
    pub routes: Vec<companion::platform::http::RouteEntry>,
    stop: StopHandle,
    running: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    // Last, so the server stops before its database is dropped.
    pub db: Option<TestDb>,
}

impl TestApp {
    /// The server on a fresh database with the test configuration.
    pub async fn spawn() -> Self {
        let db = TestDb::fresh().await;
        let builder = Application::builder(db.settings());
        Self::start(builder, Some(db)).await
    }

    /// The server on a fresh database, customised (extra routes, jobs, settings).
    pub async fn spawn_with(customize: impl FnOnce(&TestDb) -> ApplicationBuilder) -> Self {
        let db = TestDb::fresh().await;
        let builder = customize(&db);
        Self::start(builder, Some(db)).await
    }

    /// Starts `builder` as is; the caller owns the database.
    pub async fn start(builder: ApplicationBuilder, db: Option<TestDb>) -> Self {
        let app = builder.build().await.expect("the application builds");
        let mut started = Self::start_built(app).await;
        started.db = db;
        started
    }

    /// Runs an application the caller built.
    pub async fn start_built(app: Application) -> Self {
        let port = app.port();
        let platform = app.platform().clone();
        let identity = app.identity().clone();
        let personal_data = app.personal_data().to_vec();
        let catalog = app.catalog().clone();
        let privacy = app.privacy().clone();
        let routes = app.route_table().to_vec();
        let stop = app.stop_handle();
        let running = Some(tokio::spawn(app.run_until_stopped()));
        Self {
            address: format!("http://127.0.0.1:{port}"),
            port,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            platform,
            identity,
            catalog,
            privacy,
            personal_data,
            routes,
            stop,
            running,
            db: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// GET with one extra request header.
    pub async fn get_with(&self, path: &str, header: &str, value: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header(header, value)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POSTs `body` as is, with the given content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: &'static str,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Graceful stop, as on SIGTERM; returns the server's exit result. The database stays
    /// until the `TestApp` is dropped, so the test can inspect what the server left.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        self.stop.stop().await;
        match self.running.take() {
            Some(running) => running.await.unwrap(),
            None => Ok(()),
        }
    }

    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }
}

/// Asserts the error envelope with `status` and `code`; returns the `error` object.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type}"
    );
    let body: Value = response.json().await.expect("a JSON body");
    let error = body.get("error").expect("an `error` object").clone();
    assert_eq!(error["code"], code, "code in {body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a message in {body}"
    );
    error
}

/// Polls `check` every 20 ms until it yields a value or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A registered account and its current tokens.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub password: String,
    pub token: String,
    pub refresh_token: String,
}

/// A password that satisfies the policy.
pub const PASSWORD: &str = "a long and unusual passphrase";

impl TestApp {
    /// The server on a fresh database with extra settings (as environment variables).
    pub async fn spawn_with_vars(vars: &[(&str, &str)]) -> Self {
        let db = TestDb::fresh().await;
        let settings = test_settings(&db.url, vars);
        Self::start(Application::builder(settings), Some(db)).await
    }

    /// Registers `email` with [`PASSWORD`]; panics unless the answer is 201.
    pub async fn register(&self, email: &str) -> TestUser {
        let response = self
            .post_json(
                "/api/v1/auth/register",
                &serde_json::json!({ "email": email, "password": PASSWORD, "displayName": "Tester" }),
            )
            .await;
        assert_eq!(response.status(), 201, "register {email}");
        let body: Value = response.json().await.unwrap();
        TestUser {
            id: body["user"]["id"].as_str().unwrap().to_owned(),
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
            token: body["token"].as_str().unwrap().to_owned(),
            refresh_token: body["refreshToken"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/login",
            &serde_json::json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Registers `email` on the premium tier (allowed to create characters).
    pub async fn premium(&self, email: &str) -> TestUser {
        let user = self.register(email).await;
        self.set_user(&user, None, Some("premium")).await
    }

    /// POSTs raw bytes (a file) with a bearer token.
    pub async fn post_bytes(
        &self,
        path: &str,
        token: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .unwrap()
    }

    /// `POST /api/v1/media/upload` of `form` as `user`.
    pub async fn upload(
        &self,
        user: &TestUser,
        form: reqwest::multipart::Form,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/media/upload"))
            .bearer_auth(&user.token)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Uploads a small PNG as `user` and returns its media id.
    pub async fn upload_png(&self, user: &TestUser) -> String {
        let form = reqwest::multipart::Form::new().text("type", "image").part(
            "file",
            reqwest::multipart::Part::bytes(images::png(64, 0))
                .file_name("me.png")
                .mime_str("image/png")
                .unwrap(),
        );
        let response = self.upload(user, form).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// Logs in again and returns the account with fresh tokens.
    pub async fn relogin(&self, user: &TestUser) -> TestUser {
        let response = self.login(&user.email, &user.password).await;
        assert_eq!(response.status(), 200, "login {}", user.email);
        let body: Value = response.json().await.unwrap();
        TestUser {
            token: body["token"].as_str().unwrap().to_owned(),
            refresh_token: body["refreshToken"].as_str().unwrap().to_owned(),
            ..user.clone()
        }
    }

    /// Sets role and/or tier the way `companion admin set-user` does, then logs in again so
    /// the tokens carry them.
    pub async fn set_user(
        &self,
        user: &TestUser,
        role: Option<&str>,
        tier: Option<&str>,
    ) -> TestUser {
        self.identity
            .set_user(&user.email, role, tier, None)
            .await
            .unwrap();
        self.relogin(user).await
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn send_auth(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Mail sent so far (the test configuration uses the in-memory mailer). Mail goes out
    /// through the job queue, so callers usually wrap this in [`eventually`].
    pub fn outbox(&self) -> Vec<companion::platform::mail::Email> {
        self.platform
            .outbox
            .as_ref()
            .expect("mail.transport = memory")
            .sent()
    }

    /// Waits for a mail to `to` whose subject contains `subject`, and returns the token in
    /// its link.
    pub async fn mailed_token(&self, to: &str, subject: &str) -> String {
        let mail = eventually(Duration::from_secs(10), || async {
            self.outbox()
                .into_iter()
                .rev()
                .find(|m| m.to == to && m.subject.contains(subject))
        })
        .await;
        let (_, rest) = mail
            .body
            .split_once("token=")
            .expect("a token link in the mail");
        rest.split_whitespace().next().unwrap().to_owned()
    }

    /// Runs `work` with a plain client on the test database (on a thread of its own: the
    /// synchronous client must not run inside the async runtime).
    fn on_test_db<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut postgres::Client) -> T + Send + 'static,
    ) -> T {
        self.db.as_ref().expect("a test database").with_client(work)
    }

    /// The key of every object in the store.
    pub async fn object_keys(&self) -> Vec<String> {
        use futures_util::TryStreamExt;
        self.platform
            .storage
            .store()
            .list(None)
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .unwrap()
    }

    /// Runs `sql` on the test database and returns the first column of the first row as text.
    pub fn query_one(&self, sql: &str) -> Option<String> {
        let sql = format!("SELECT ({sql})::text");
        self.on_test_db(move |client| {
            client
                .query_opt(&sql, &[])
                .unwrap()
                .and_then(|row| row.get::<_, Option<String>>(0))
        })
    }

    /// Runs `sql` on the test database and returns the first column of every row as text.
    pub fn query_column(&self, sql: &str) -> Vec<String> {
        self.db.as_ref().expect("a test database").query_column(sql)
    }

    /// Runs a statement on the test database; returns the affected row count.
    pub fn execute(&self, sql: &str) -> u64 {
        let sql = sql.to_owned();
        self.on_test_db(move |client| client.execute(&sql, &[]).unwrap())
    }
}

/// A route of the table, with its method as the HTTP client names it.
pub fn method_of(route: &companion::platform::http::RouteEntry) -> reqwest::Method {
    reqwest::Method::from_bytes(route.method.as_str().as_bytes()).unwrap()
}

/// `template` (`/a/{id}/b/{message}`) with each parameter replaced by `id(segment before it)`.
pub fn fill_path(template: &str, mut id: impl FnMut(&str) -> String) -> String {
    let mut out = Vec::new();
    let mut previous = "";
    for segment in template.split('/') {
        out.push(if segment.starts_with('{') {
            id(previous)
        } else {
            segment.to_owned()
        });
        previous = segment;
    }
    out.join("/")
}

/// `template` with fresh ids that name nothing.
pub fn nobodys_path(template: &str) -> String {
    fill_path(template, |_| uuid::Uuid::now_v7().to_string())
}
