//! Outgoing mail. [`SmtpMailer`] speaks SMTP (lettre) to the server in `SMTP_URL`;
//! [`FileMailer`] writes each message as an `.eml` file into a folder, which is what the
//! embedded default uses. Both send exactly the bytes a mail client would receive.
//!
//! Sending is at-least-once: the caller records a success after `send` returns and
//! retries on error. Each message carries a stable `Message-ID`, and the file mailer
//! names its file after it, so a retry overwrites rather than duplicates.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart, SinglePart, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// One plain-text email, with files attached (the tickets' QR codes).
#[derive(Debug, Clone)]
pub struct Email {
    pub to: String,
    pub to_name: String,
    pub subject: String,
    pub text: String,
    /// Without angle brackets, e.g. `booking-…@usher`.
    pub message_id: String,
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone)]
pub struct Attachment {
    pub filename: String,
    /// e.g. `image/svg+xml`.
    pub content_type: String,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid mail configuration: {0}")]
    Config(String),
    #[error("invalid message: {0}")]
    Message(String),
    /// The mail server or disk failed; sending again later may work.
    #[error("sending failed: {0}")]
    Send(String),
}

#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, email: &Email) -> Result<(), MailError>;
    /// Where mail goes, for the start-up log.
    fn describe(&self) -> String;
}

/// Chooses the mailer: SMTP when `smtp_url` is set, else `.eml` files in `mail_dir`.
/// `timeout` bounds each SMTP conversation step (connecting, every command): a server
/// that stops answering fails the send, which the job retries later.
pub fn from_config(
    smtp_url: Option<&str>,
    mail_dir: &Path,
    from: &str,
    timeout: std::time::Duration,
) -> Result<Arc<dyn Mailer>, MailError> {
    let from: Mailbox = from
        .parse()
        .map_err(|e| MailError::Config(format!("sender address {from:?}: {e}")))?;
    Ok(match smtp_url {
        Some(url) => Arc::new(SmtpMailer::new(url, from, timeout)?),
        None => Arc::new(FileMailer::new(mail_dir.to_owned(), from)),
    })
}

fn build(from: &Mailbox, email: &Email) -> Result<Message, MailError> {
    let to = Mailbox::new(
        Some(email.to_name.clone()),
        email
            .to
            .parse()
            .map_err(|e| MailError::Message(format!("recipient {:?}: {e}", email.to)))?,
    );
    let builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject.clone())
        .message_id(Some(format!("<{}>", email.message_id)));
    if email.attachments.is_empty() {
        return builder
            .header(ContentType::TEXT_PLAIN)
            .body(email.text.clone())
            .map_err(|e| MailError::Message(e.to_string()));
    }
    let mut parts = MultiPart::mixed().singlepart(SinglePart::plain(email.text.clone()));
    for file in &email.attachments {
        let kind = ContentType::parse(&file.content_type)
            .map_err(|e| MailError::Message(format!("{}: {e}", file.content_type)))?;
        parts = parts.singlepart(
            lettre::message::Attachment::new(file.filename.clone()).body(file.body.clone(), kind),
        );
    }
    builder
        .multipart(parts)
        .map_err(|e| MailError::Message(e.to_string()))
}

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    url: String,
    timeout: std::time::Duration,
}

impl SmtpMailer {
    /// `smtp://host:port` (plain, e.g. a local relay), `smtp://…?tls=required`
    /// (STARTTLS) or `smtps://host` (TLS), with optional `user:password@`.
    pub fn new(url: &str, from: Mailbox, timeout: std::time::Duration) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| MailError::Config(format!("SMTP_URL: {e}")))?
            .timeout(Some(timeout))
            .build();
        // Never log the password.
        let url = match url.split_once('@') {
            Some((scheme_and_user, host)) => {
                let scheme = scheme_and_user.split("://").next().unwrap_or("smtp");
                format!("{scheme}://…@{host}")
            }
            None => url.to_owned(),
        };
        Ok(Self {
            transport,
            from,
            url,
            timeout,
        })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let message = build(&self.from, email)?;
        // lettre's own timeout covers reads and writes once talking, not every wait (a
        // server that accepts and never greets held a send for a minute): one deadline
        // for the whole conversation.
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(sent) => sent.map(|_| ()).map_err(|e| MailError::Send(e.to_string())),
            Err(_) => Err(MailError::Send(format!(
                "the SMTP server did not finish within {:?}",
                self.timeout
            ))),
        }
    }

    fn describe(&self) -> String {
        format!("SMTP {}", self.url)
    }
}

pub struct FileMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl FileMailer {
    pub fn new(dir: PathBuf, from: Mailbox) -> Self {
        Self { dir, from }
    }
}

#[async_trait]
impl Mailer for FileMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let message = build(&self.from, email)?;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| MailError::Send(format!("creating {}: {e}", self.dir.display())))?;
        let name: String = email
            .message_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.dir.join(format!("{name}.eml"));
        // Write then rename, so a reader never sees half a message.
        let partial = self
            .dir
            .join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&partial, message.formatted())
            .await
            .map_err(|e| MailError::Send(format!("writing {}: {e}", partial.display())))?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(|e| MailError::Send(format!("renaming to {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), "email written");
        Ok(())
    }

    fn describe(&self) -> String {
        format!(".eml files in {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: std::time::Duration = std::time::Duration::from_secs(1);

    fn email() -> Email {
        Email {
            to: "ann@example.com".into(),
            to_name: "Ann Lee".into(),
            subject: "Your tickets".into(),
            text: "Row A, seat 5".into(),
            message_id: "booking-123@usher".into(),
            attachments: Vec::new(),
        }
    }

    #[tokio::test]
    async fn attachments_make_a_multipart_message() {
        let dir =
            std::env::temp_dir().join(format!("usher-mail-{}", uuid::Uuid::new_v4().simple()));
        let mailer = from_config(None, &dir, "Usher <tickets@usher.example>", SECOND).unwrap();
        let mut with_file = email();
        with_file.attachments.push(Attachment {
            filename: "ticket-1.svg".into(),
            content_type: "image/svg+xml".into(),
            body: b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec(),
        });
        mailer.send(&with_file).await.unwrap();
        let text = std::fs::read_to_string(dir.join("booking-123_usher.eml")).unwrap();
        assert!(text.contains("multipart/mixed"), "{text}");
        assert!(text.contains("Row A, seat 5"), "{text}");
        assert!(text.contains("filename=\"ticket-1.svg\""), "{text}");
        assert!(text.contains("image/svg+xml"), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn file_mailer_writes_one_eml_per_message_id() {
        let dir =
            std::env::temp_dir().join(format!("usher-mail-{}", uuid::Uuid::new_v4().simple()));
        let mailer = from_config(None, &dir, "Usher <tickets@usher.example>", SECOND).unwrap();
        mailer.send(&email()).await.unwrap();
        mailer.send(&email()).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(files.len(), 1, "a retry overwrites");
        let text = std::fs::read_to_string(dir.join("booking-123_usher.eml")).unwrap();
        assert!(text.contains("Message-ID: <booking-123@usher>"), "{text}");
        assert!(text.contains("To: \"Ann Lee\" <ann@example.com>"), "{text}");
        assert!(text.contains("Row A, seat 5"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(from_config(None, Path::new("/tmp"), "not an address", SECOND).is_err());
        assert!(from_config(Some("ftp://nope"), Path::new("/tmp"), "a@b.example", SECOND).is_err());
    }
}
