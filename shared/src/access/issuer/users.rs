//! The built-in issuer's users: `<data-dir>/users.json`, passwords hashed with bcrypt,
//! the file readable by its owner only and replaced whole at each change.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The administrator's user name (the same user the bootstrapped access token is for).
pub const ADMIN_USER: &str = "admin";
const FILE: &str = "users.json";
/// bcrypt's cost for local users' passwords.
const COST: u32 = 10;
/// Passwords shorter than this are refused.
pub const MIN_PASSWORD_LEN: usize = 8;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    password: String,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    users: BTreeMap<String, User>,
}

/// Why a user cannot be added.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("a user name is 1 to 64 letters, digits, '-', '_' or '.'")]
    InvalidName,
    #[error("a password has at least {MIN_PASSWORD_LEN} characters")]
    WeakPassword,
    #[error("the user {0} exists")]
    Exists(String),
    #[error("cannot store the users: {0}")]
    Io(#[source] std::io::Error),
    #[error("cannot hash the password: {0}")]
    Hash(#[source] bcrypt::BcryptError),
}

/// Local users. Cheap to clone.
#[derive(Clone)]
pub struct Users {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl Users {
    /// Opens the users of `data_dir`, making the administrator when there is none. Returns
    /// the password when it was generated now.
    pub fn open(
        data_dir: &Path,
        admin_role: &str,
        admin_password: Option<&str>,
    ) -> anyhow::Result<(Self, Option<String>)> {
        let path = data_dir.join(FILE);
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is not a users file", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let users = Users {
            path,
            file: Arc::new(Mutex::new(file)),
        };
        let mut generated = None;
        if users.roles(ADMIN_USER).is_none() {
            let password = match admin_password.filter(|p| !p.is_empty()) {
                Some(password) => password.to_owned(),
                None => {
                    let password = generate_password();
                    generated = Some(password.clone());
                    password
                }
            };
            users
                .add(ADMIN_USER, &password, vec![admin_role.to_owned()])
                .map_err(anyhow::Error::new)?;
        }
        Ok((users, generated))
    }

    /// Adds a user. The password is hashed before it is kept.
    pub fn add(&self, name: &str, password: &str, roles: Vec<String>) -> Result<(), UserError> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(UserError::InvalidName);
        }
        if password.chars().count() < MIN_PASSWORD_LEN {
            return Err(UserError::WeakPassword);
        }
        let hash = bcrypt::hash(password, COST).map_err(UserError::Hash)?;
        let mut file = self.file.lock().expect("users");
        if file.users.contains_key(name) {
            return Err(UserError::Exists(name.to_owned()));
        }
        file.users.insert(
            name.to_owned(),
            User {
                password: hash,
                roles,
            },
        );
        if let Err(e) = self.save(&file) {
            file.users.remove(name);
            return Err(UserError::Io(e));
        }
        Ok(())
    }

    /// Removes a user; `false` if there was none.
    pub fn remove(&self, name: &str) -> Result<bool, UserError> {
        let mut file = self.file.lock().expect("users");
        let Some(user) = file.users.remove(name) else {
            return Ok(false);
        };
        if let Err(e) = self.save(&file) {
            file.users.insert(name.to_owned(), user);
            return Err(UserError::Io(e));
        }
        Ok(true)
    }

    /// The names of the users.
    pub fn names(&self) -> Vec<String> {
        self.file
            .lock()
            .expect("users")
            .users
            .keys()
            .cloned()
            .collect()
    }

    /// The roles of a user, if there is one.
    pub fn roles(&self, name: &str) -> Option<Vec<String>> {
        let file = self.file.lock().expect("users");
        file.users.get(name).map(|u| u.roles.clone())
    }

    /// The roles of a user whose password this is. Slow (bcrypt): call off the request
    /// threads. An unknown user costs a hash as well, so timing does not tell who exists.
    pub fn check(&self, name: &str, password: &str) -> Option<Vec<String>> {
        let user = self.file.lock().expect("users").users.get(name).cloned();
        match user {
            Some(user) => bcrypt::verify(password, &user.password)
                .unwrap_or(false)
                .then_some(user.roles),
            None => {
                let _ = bcrypt::verify(password, UNKNOWN_USER_HASH);
                None
            }
        }
    }

    fn save(&self, file: &File) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(file).map_err(std::io::Error::other)?;
        let temp = self.path.with_extension("json.new");
        write_private(&temp, &text)?;
        std::fs::rename(&temp, &self.path)
    }
}

/// A hash of nothing anyone knows, checked against for unknown users (cost 10).
const UNKNOWN_USER_HASH: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

/// Sixteen random letters and digits.
fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..16)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Writes a file only its owner can read.
pub(crate) fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()
}
