//! A real SMTP server on loopback for mail tests: Python's aiosmtpd (from PyPI,
//! installed by `scripts/test`) with its Maildir handler, so every accepted message is a
//! file the test can count and read. Stopped when dropped.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SmtpServer {
    pub port: u16,
    maildir: PathBuf,
    child: Child,
}

impl SmtpServer {
    /// Starts on a free port.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("probe a free port")
            .port();
        Self::start_on(port)
    }

    /// Starts on this port (to bring a "down" server back where the app expects it).
    pub fn start_on(port: u16) -> Self {
        let maildir =
            crate::scratch_dir().join(format!("smtp-{port}-{}", uuid::Uuid::new_v4().simple()));
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("python3 -m aiosmtpd: {e}; run scripts/test, which installs it")
            });
        let mut server = Self {
            port,
            maildir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                let mut err = String::new();
                if let Some(mut stderr) = server.child.stderr.take() {
                    use std::io::Read;
                    let _ = stderr.read_to_string(&mut err);
                }
                panic!(
                    "aiosmtpd exited with {status}: {err} (pip install aiosmtpd; scripts/test does)"
                );
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not start within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, raw.
    pub fn messages(&self) -> Vec<String> {
        let mut messages = Vec::new();
        for folder in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.maildir.join(folder)) {
                for entry in entries.flatten() {
                    if let Ok(text) = std::fs::read_to_string(entry.path()) {
                        messages.push(text);
                    }
                }
            }
        }
        messages
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
