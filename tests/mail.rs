//! The SMTP mailer against a small SMTP server inside the test that speaks the real protocol
//! (greeting, EHLO, MAIL FROM, RCPT TO, DATA with dot-termination, QUIT).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::TestApp;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One received message: envelope recipients and the raw DATA.
#[derive(Debug, Clone, Default)]
struct Received {
    recipients: Vec<String>,
    data: String,
}

async fn smtp_server() -> (u16, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let inbox = Arc::new(Mutex::new(Vec::new()));
    let store = inbox.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write
                    .write_all(b"220 test.smtp ESMTP ready\r\n")
                    .await
                    .unwrap();
                let mut message = Received::default();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250-test.smtp\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("MAIL FROM") {
                        b"250 sender ok\r\n"
                    } else if upper.starts_with("RCPT TO") {
                        message.recipients.push(line[8..].trim().to_owned());
                        b"250 recipient ok\r\n"
                    } else if upper == "DATA" {
                        write
                            .write_all(b"354 end with <CRLF>.<CRLF>\r\n")
                            .await
                            .unwrap();
                        while let Ok(Some(data)) = lines.next_line().await {
                            if data == "." {
                                break;
                            }
                            message.data.push_str(&data);
                            message.data.push('\n');
                        }
                        store.lock().unwrap().push(std::mem::take(&mut message));
                        b"250 queued\r\n"
                    } else if upper == "QUIT" {
                        write.write_all(b"221 bye\r\n").await.unwrap();
                        break;
                    } else if upper == "RSET" || upper == "NOOP" {
                        b"250 ok\r\n"
                    } else {
                        b"502 not implemented\r\n"
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, inbox)
}

#[tokio::test]
async fn verification_mail_goes_out_over_smtp_through_the_job_queue() {
    let (port, inbox) = smtp_server().await;
    let url = format!("smtp://127.0.0.1:{port}");
    let app = TestApp::spawn_with_vars(&[
        ("COMPANION__MAIL__TRANSPORT", "smtp"),
        ("COMPANION__MAIL__SMTP_URL", &url),
        (
            "COMPANION__MAIL__FROM",
            "Companion <no-reply@companion.test>",
        ),
        ("COMPANION__SERVER__PUBLIC_URL", "https://companion.test"),
    ])
    .await;
    app.register("ann@example.com").await;

    let received = support::eventually(Duration::from_secs(15), || async {
        inbox.lock().unwrap().first().cloned()
    })
    .await;
    assert_eq!(received.recipients, vec!["<ann@example.com>"]);
    assert!(
        received
            .data
            .contains("Subject: Confirm your email address"),
        "{}",
        received.data
    );
    assert!(
        received
            .data
            .contains("From: Companion <no-reply@companion.test>")
    );
    assert!(
        received
            .data
            .contains("https://companion.test/#/verify-email?token=")
    );
    // The job that sent it is done and gone.
    support::eventually(Duration::from_secs(10), || async {
        (app.query_one("SELECT count(*) FROM platform.jobs WHERE kind = 'mail.send'")
            .unwrap()
            == "0")
            .then_some(())
    })
    .await;
}
