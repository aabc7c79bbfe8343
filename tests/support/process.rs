//! The server as a child process (`companion serve`), and private PostgreSQL and Redis
//! servers that a test may stop and start again: what the fault tests need.
//!
//! - PostgreSQL: a throwaway cluster (`initdb`) on a free port. Its tools come from
//!   `COMPANION_PG_BINDIR` (scripts/test sets it), else `PATH`, else Debian's
//!   `/usr/lib/postgresql/<version>/bin`. As root it runs as the `postgres` system user, as
//!   PostgreSQL requires.
//! - Redis: `redis-server` from `PATH`, keeping nothing on disk.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use serde_json::{Value, json};

use super::chat::LUNA;
use super::{PASSWORD, eventually};

/// `companion` with a clean environment: the repository's configuration, an in-memory store.
pub fn companion() -> Command {
    configured(Command::new(env!("CARGO_BIN_EXE_companion")))
}

/// `command` (which runs `companion`, perhaps through a wrapper) with the clean environment.
fn configured(mut command: Command) -> Command {
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "COMPANION_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env("COMPANION__STORAGE__URL", "memory://")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory of its own under the system's temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(kind: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "companion-{kind}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `companion serve` in the test environment, its output in a file (a pipe nobody reads
/// would fill and stall it).
pub struct Server {
    pub port: u16,
    pub client: reqwest::Client,
    child: Child,
    scratch: Scratch,
}

impl Server {
    /// Starts the server with `vars` and waits until `/health` answers.
    pub async fn start(vars: &[(&str, String)]) -> Self {
        Self::launch(companion(), vars).await
    }

    /// `start`, with the process's open file limit set to `soft` (and `hard`) before it runs,
    /// as a service manager would (util-linux `prlimit`, which then runs the server).
    pub async fn start_with_open_files(vars: &[(&str, String)], soft: u64, hard: u64) -> Self {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={soft}:{hard}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_companion"));
        Self::launch(configured(command), vars).await
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    async fn launch(mut command: Command, vars: &[(&str, String)]) -> Self {
        let scratch = Scratch::new("server");
        let log = std::fs::File::create(scratch.0.join("server.log")).unwrap();
        let port = free_port();
        command
            .env("COMPANION_ENV", "test")
            .env("PORT", port.to_string())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (key, value) in vars {
            command.env(key, value);
        }
        let child = command.spawn().unwrap();
        let server = Self {
            port,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            child,
            scratch,
        };
        let health = server.url("/health");
        eventually(Duration::from_secs(60), || async {
            let status = server.client.get(&health).send().await.ok()?.status();
            (status == 200).then_some(())
        })
        .await;
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Registers `email`; the access token.
    pub async fn register(&self, email: &str) -> String {
        let response = self
            .client
            .post(self.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD, "displayName": "Tester"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "registered {email}");
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// A new conversation with Luna; its id.
    pub async fn conversation(&self, token: &str) -> String {
        let created = self
            .client
            .post(self.url("/api/v1/conversations"))
            .bearer_auth(token)
            .json(&json!({"characterId": LUNA}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        created.json::<Value>().await.unwrap()["conversation"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.0.join("server.log")).unwrap_or_default()
    }

    /// Sends SIGTERM, as a platform does to stop an instance.
    pub async fn terminate(&self) {
        let pid = self.child.id().expect("the server runs").to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success());
    }

    /// Kills the process at once (SIGKILL), as a crash or an out-of-memory kill would.
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// The exit status, which must come within `within`.
    pub async fn exited(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the server exits within {within:?}"))
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- the server's last lines ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn pg_bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("COMPANION_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let in_path = std::env::var("PATH").unwrap_or_default();
    if let Some(dir) = std::env::split_paths(&in_path).find(|d| d.join("pg_ctl").is_file()) {
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).expect(
        "PostgreSQL's server tools (initdb, pg_ctl): scripts/test installs them and sets \
         COMPANION_PG_BINDIR",
    )
}

/// A PostgreSQL cluster of the test's own, which it may stop and start.
pub struct PrivatePostgres {
    pub port: u16,
    bindir: PathBuf,
    scratch: Scratch,
}

impl PrivatePostgres {
    pub async fn start() -> Self {
        let scratch = Scratch::new("pg");
        let bindir = pg_bindir();
        if running_as_root() {
            // PostgreSQL refuses to run as root.
            let owned = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&scratch.0)
                .status()
                .await
                .unwrap();
            assert!(
                owned.success(),
                "the postgres system user exists (scripts/test creates it)"
            );
        }
        let cluster = Self {
            port: free_port(),
            bindir,
            scratch,
        };
        let data = cluster.data();
        let out = cluster
            .tool("initdb")
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "-N", "-D"])
            .arg(&data)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.start_again().await;
        cluster
    }

    fn data(&self) -> PathBuf {
        self.scratch.0.join("data")
    }

    fn tool(&self, name: &str) -> Command {
        let mut command = Command::from(self.std_tool(name));
        command.kill_on_drop(true);
        command
    }

    fn std_tool(&self, name: &str) -> std::process::Command {
        let program = self.bindir.join(name);
        let mut command = if running_as_root() {
            let mut runuser = std::process::Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(program);
            runuser
        } else {
            std::process::Command::new(program)
        };
        command.stdin(Stdio::null());
        command
    }

    /// `postgres://…` for the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// Starts the server and waits until it accepts connections.
    pub async fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.scratch.0.display()
        );
        let out = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.scratch.0.join("server.log"))
            .args(["-w", "-o", &options, "start"])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "pg_ctl start: {}", self.server_log());
    }

    /// Stops the server the hard way, as a crash or a killed container would: every
    /// connection is dropped and the next start replays the write-ahead log.
    pub async fn crash(&self) {
        let out = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "pg_ctl stop: {}", self.server_log());
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.scratch.0.join("server.log")).unwrap_or_default()
    }

    /// Runs `sql` and returns the first column of each row, as text.
    pub fn column(&self, sql: &str) -> Vec<String> {
        let (url, sql) = (self.url(), sql.to_owned());
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            client
                .query(&sql, &[])
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect()
        })
        .join()
        .unwrap()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .std_tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A Redis server of the test's own, which it may stop and start on the same port.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.start_again().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn start_again(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(&address)
                .await
                .ok()
                .map(drop)
        })
        .await;
    }

    /// Kills the server: its connections drop, new ones are refused.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Connections subscribed to the realtime channel: one per instance listening (0 while
    /// the server is down).
    pub async fn subscribers(&self) -> i64 {
        let client = redis::Client::open(self.url()).unwrap();
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return 0;
        };
        let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(companion::platform::realtime::CHANNEL)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        counts.first().map_or(0, |(_, n)| *n)
    }
}
