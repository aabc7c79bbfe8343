//! A real S3-compatible server for the tests: `s3s-fs` (from crates.io), which keeps a
//! bucket in a folder and checks requests like S3 does: SigV4 signatures, and a presigned
//! URL's signature and expiry. `scripts/test` installs it and names it in `COMPANION_S3S_FS`;
//! without that variable it must be on `PATH`
//! (`cargo install s3s-fs --version 0.14.1 --features binary --locked`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ACCESS_KEY: &str = "companion-test-key";
pub const SECRET_KEY: &str = "companion-test-secret-0123456789";

/// One server on a free port with one empty bucket; stopped and removed when dropped.
pub struct S3Server {
    pub endpoint: String,
    pub bucket: String,
    /// The folder the server keeps its buckets in.
    pub root: PathBuf,
    child: Child,
}

impl S3Server {
    pub async fn start() -> Self {
        let program = std::env::var("COMPANION_S3S_FS").unwrap_or_else(|_| "s3s-fs".to_owned());
        let root = std::env::temp_dir().join(format!("companion-s3-{}", uuid::Uuid::now_v7()));
        let bucket = "companion-media".to_owned();
        std::fs::create_dir_all(root.join(&bucket)).unwrap();
        // A free port: taken from the system, then handed to the server.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&program)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "could not start the S3 test server `{program}` ({error}); run scripts/test, \
                     or install it: cargo install s3s-fs --version 0.14.1 --features binary \
                     --locked"
                )
            });
        let server = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket,
            root,
            child,
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the S3 test server did not start listening on port {port}");
    }

    /// The settings (as environment variables) of a store in this server's bucket, under
    /// `prefix`.
    pub fn vars(&self, prefix: &str) -> Vec<(&'static str, String)> {
        vec![
            (
                "COMPANION__STORAGE__URL",
                format!("s3://{}/{prefix}", self.bucket),
            ),
            (
                "COMPANION__STORAGE__OPTIONS__AWS_ENDPOINT",
                self.endpoint.clone(),
            ),
            (
                "COMPANION__STORAGE__OPTIONS__AWS_ALLOW_HTTP",
                "true".to_owned(),
            ),
            (
                "COMPANION__STORAGE__OPTIONS__AWS_REGION",
                "us-east-1".to_owned(),
            ),
            (
                "COMPANION__STORAGE__OPTIONS__AWS_ACCESS_KEY_ID",
                ACCESS_KEY.to_owned(),
            ),
            (
                "COMPANION__STORAGE__OPTIONS__AWS_SECRET_ACCESS_KEY",
                SECRET_KEY.to_owned(),
            ),
        ]
    }

    /// Every file in the bucket's folder: the objects.
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &std::path::Path, found: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, found);
                } else {
                    found.push(path);
                }
            }
        }
        let mut found = Vec::new();
        walk(&self.root.join(&self.bucket), &mut found);
        found
    }

    /// The parts of multipart uploads that were neither completed nor aborted (the server
    /// keeps them beside its buckets).
    pub fn staged_parts(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| name.starts_with(".upload_id-"))
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
