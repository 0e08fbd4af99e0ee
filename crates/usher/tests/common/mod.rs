//! Starting the real binary, shared by the tests that do.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use usher_testkit::scratch_dir;

/// `usher serve` on this database and a free loopback port, in the scratch folder, with
/// JSON logs to nowhere and none of the caller's SMTP or rate-limit settings; add what
/// the test needs, spawn it, then call [`listening`].
pub fn usher_serve(database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_usher"));
    command
        .arg("serve")
        .current_dir(scratch_dir())
        .env("DATABASE_URL", database_url)
        .env("USHER_ADDR", "127.0.0.1:0")
        .env("USHER_LOG_FORMAT", "json")
        .env_remove("SMTP_URL")
        .env_remove("USHER_RATE_LIMITS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

/// The URL a started `usher serve` printed as its first line.
pub fn listening(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("read the first line");
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned()
}
