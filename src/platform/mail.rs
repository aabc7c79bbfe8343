//! Outgoing email behind one [`Mailer`] trait, chosen by `mail.transport`:
//! SMTP through `lettre` in production, the log in development, and an in-memory outbox
//! the tests read. Modules never send mail from a request: they enqueue a job in the same
//! transaction as whatever the mail is about, and the job calls the mailer (so a crash
//! cannot lose a message, and a slow SMTP server cannot slow a request).

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::config::{MailSettings, MailTransport};
use crate::platform::jobs::{JobRegistry, NewJob};

/// One plain-text message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid address: {0}")]
    Address(#[from] lettre::address::AddressError),
    #[error("could not build the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

pub trait Mailer: Send + Sync {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), MailError>>;
}

/// The mailer, and the in-memory outbox when that is the mailer (tests read it).
pub type MailerAndOutbox = (Arc<dyn Mailer>, Option<Arc<MemoryMailer>>);

/// Builds the mailer the settings ask for.
pub fn from_settings(settings: &MailSettings) -> Result<MailerAndOutbox, MailError> {
    Ok(match settings.transport {
        MailTransport::Log => (Arc::new(LogMailer), None),
        MailTransport::Memory => {
            let outbox = Arc::new(MemoryMailer::default());
            (outbox.clone(), Some(outbox))
        }
        MailTransport::Smtp => {
            let url = settings
                .smtp_url
                .as_ref()
                .map(|u| u.expose_secret().to_owned())
                .unwrap_or_default();
            let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)?.build();
            let from: Mailbox = settings.from.parse()?;
            (Arc::new(SmtpMailer { transport, from }), None)
        }
    })
}

/// Logs each message (subject and recipient at info, the body at debug).
pub struct LogMailer;

impl Mailer for LogMailer {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), MailError>> {
        Box::pin(async move {
            tracing::info!(to = %email.to, subject = %email.subject, "mail (log transport)");
            tracing::debug!(body = %email.body, "mail body");
            Ok(())
        })
    }
}

/// Keeps every message; tests read them with [`MemoryMailer::sent`].
#[derive(Default)]
pub struct MemoryMailer {
    sent: Mutex<Vec<Email>>,
}

impl MemoryMailer {
    pub fn sent(&self) -> Vec<Email> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Mailer for MemoryMailer {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), MailError>> {
        Box::pin(async move {
            self.sent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(email.clone());
            Ok(())
        })
    }
}

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer for SmtpMailer {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), MailError>> {
        Box::pin(async move {
            let message = Message::builder()
                .from(self.from.clone())
                .to(email.to.parse()?)
                .subject(&email.subject)
                .body(email.body.clone())?;
            self.transport.send(message).await?;
            Ok(())
        })
    }
}

/// The job kind that delivers one [`Email`]; registered by `app.rs` for every module.
pub const SEND_JOB: &str = "mail.send";

/// A job that sends `email`; enqueue it in the transaction that decided to send it.
pub fn send_job(email: &Email) -> NewJob {
    NewJob::new(
        SEND_JOB,
        serde_json::json!({ "to": email.to, "subject": email.subject, "body": email.body }),
    )
    .max_attempts(8)
}

/// Registers the [`SEND_JOB`] handler.
pub fn register_jobs(registry: &mut JobRegistry, mailer: Arc<dyn Mailer>) {
    registry.register(SEND_JOB, move |job| {
        let mailer = mailer.clone();
        async move {
            let email: Email = job.payload_as()?;
            mailer.send(&email).await?;
            Ok(())
        }
    });
}
