//! The master key, and the server's own keys sealed under it.
//!
//! Usher keeps three keys of its own in the database's settings: the JWT signing key
//! (unless `USHER_JWT_SECRET` is given), the key ticket codes are derived from, and the
//! key that encrypts stored idempotent answers. A copy of the database alone must not
//! give them away, so each is stored sealed (XChaCha20-Poly1305, bound to its setting's
//! name) under a master key kept outside the database:
//!
//! - `USHER_MASTER_KEY`: 64 hex characters (32 random bytes, e.g. `openssl rand -hex 32`),
//!   the same for every instance of a deployment; or
//! - a key file: created on first start beside the SQLite database (`usher.db.key`) or,
//!   on PostgreSQL, in the working directory (`usher-master.key`), with mode 0600.
//!   `USHER_MASTER_KEY_FILE` names another path. A key file readable by group or others
//!   is refused.
//!
//! Keys found stored in plaintext (databases from before this) are sealed in place on
//! the next start. A database whose keys were sealed under another master key refuses to
//! start with a message that says so, rather than signing everyone out.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};

use usher_store::Store;

use crate::sealed::Sealer;

/// How a stored value marks itself as sealed under the master key.
const SEALED_PREFIX: &str = "sealed:v1:";

/// Where the master key comes from.
#[derive(Clone, Debug)]
pub enum MasterKeySource {
    /// 64 hex characters.
    Key(SecretString),
    /// A file holding the key as hex; created (mode 0600) when missing.
    File(PathBuf),
}

impl MasterKeySource {
    /// A fresh random key (for tests and throwaway servers).
    pub fn generate() -> Result<Self, String> {
        Ok(Self::Key(SecretString::from(fresh_hex()?)))
    }

    /// The 32 key bytes, creating the key file if needed.
    pub fn load(&self) -> Result<[u8; 32], String> {
        match self {
            MasterKeySource::Key(hex_key) => {
                parse(hex_key.expose_secret()).map_err(|why| format!("USHER_MASTER_KEY: {why}"))
            }
            MasterKeySource::File(path) => load_file(path),
        }
    }
}

/// The default key file for a database URL: beside a SQLite file, else in the
/// working directory.
pub fn default_key_file(database_url: &str) -> PathBuf {
    let sqlite_path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        .filter(|path| !path.is_empty() && *path != ":memory:");
    match sqlite_path {
        Some(path) => PathBuf::from(format!("{path}.key")),
        None => PathBuf::from("usher-master.key"),
    }
}

fn fresh_hex() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("random source failed: {e}"))?;
    Ok(hex::encode(bytes))
}

fn parse(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text.trim())
        .map_err(|_| "a master key is 64 hex characters (32 random bytes)".to_owned())?;
    bytes
        .try_into()
        .map_err(|_| "a master key is 64 hex characters (32 random bytes)".to_owned())
}

fn load_file(path: &Path) -> Result<[u8; 32], String> {
    let shown = path.display();
    // Created only if missing, with its mode set at creation: never world-readable, not
    // even for a moment.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            let key = fresh_hex()?;
            file.write_all(format!("{key}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("writing the master key file {shown}: {e}"))?;
            tracing::info!(path = %shown, "created the master key file; back it up with the database");
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("creating the master key file {shown}: {e}")),
    }
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("reading the master key file {shown}: {e}"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "the master key file {shown} is readable by others (mode {:o}); run `chmod 600 {shown}`",
            mode & 0o777
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the master key file {shown}: {e}"))?;
    parse(&text).map_err(|why| format!("the master key file {shown}: {why}"))
}

/// The server's own keys, kept sealed in the database's settings.
pub struct Keyring {
    sealer: Sealer,
}

impl Keyring {
    pub fn new(master: [u8; 32]) -> Self {
        Self {
            sealer: Sealer::new(master),
        }
    }

    /// The secret under `name`: created (random) and stored sealed if missing; sealed in
    /// place if it was stored in plaintext. Racing instances agree on the first stored.
    pub async fn secret(&self, store: &dyn Store, name: &str) -> Result<String, String> {
        let context = format!("setting:{name}");
        let fresh = crate::auth::generate_secret().map_err(|e| e.to_string())?;
        let sealed_fresh = self.seal(&fresh, &context)?;
        let stored = store
            .setting_or_insert(name, &sealed_fresh)
            .await
            .map_err(|e| e.to_string())?;
        let Some(sealed) = stored.strip_prefix(SEALED_PREFIX) else {
            // Stored in plaintext before keys were sealed: seal it now, keep its value.
            let resealed = self.seal(&stored, &context)?;
            store
                .replace_setting(name, &stored, &resealed)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(setting = name, "sealed a key that was stored in plaintext");
            return Ok(stored);
        };
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|_| format!("the stored {name} is damaged"))?;
        let plain = self.sealer.open(&bytes, context.as_bytes()).map_err(|_| {
            format!(
                "the stored {name} does not open under this master key: the database was \
                 sealed with another USHER_MASTER_KEY or key file; start with that one"
            )
        })?;
        String::from_utf8(plain).map_err(|_| format!("the stored {name} is damaged"))
    }

    fn seal(&self, value: &str, context: &str) -> Result<String, String> {
        let sealed = self.sealer.seal(value.as_bytes(), context.as_bytes())?;
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(sealed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_created_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("usher-key-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("usher.db.key");
        let first = load_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            load_file(&path).unwrap(),
            first,
            "the same key on the next start"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_file(&path).unwrap_err().contains("chmod 600"));
        std::fs::write(dir.join("bad.key"), "not hex").unwrap();
        std::fs::set_permissions(dir.join("bad.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        assert!(
            load_file(&dir.join("bad.key"))
                .unwrap_err()
                .contains("64 hex")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn key_files_sit_beside_sqlite_databases() {
        assert_eq!(
            default_key_file("sqlite://usher.db"),
            PathBuf::from("usher.db.key")
        );
        assert_eq!(
            default_key_file("sqlite:///var/lib/usher/db.sqlite?mode=rwc"),
            PathBuf::from("/var/lib/usher/db.sqlite.key")
        );
        assert_eq!(
            default_key_file("postgres://u@db/usher"),
            PathBuf::from("usher-master.key")
        );
    }

    #[test]
    fn keys_given_as_text_must_be_32_bytes_of_hex() {
        let key = MasterKeySource::Key(SecretString::from("ab".repeat(32)));
        assert_eq!(key.load().unwrap(), [0xab; 32]);
        let short = MasterKeySource::Key(SecretString::from("abcd".to_owned()));
        assert!(short.load().unwrap_err().starts_with("USHER_MASTER_KEY"));
    }
}
