//! Which stored credentials a presented password matches, as in Drogue Cloud:
//!
//! - a password alone (for device `id`) matches any `pass` entry; a `user` entry with
//!   `unique: true` whose username is `id`; a `user` entry whose username is the device's
//!   name;
//! - a username and password match a `pass` entry when the username is the device's
//!   name, and any `user` entry with that username.

use crate::model::device_spec::Credential;

/// What a device presented.
pub enum Presented<'a> {
    Password {
        id: &'a str,
        password: &'a str,
    },
    UsernamePassword {
        username: &'a str,
        password: &'a str,
    },
}

impl Presented<'_> {
    pub fn password(&self) -> &str {
        match self {
            Self::Password { password, .. } | Self::UsernamePassword { password, .. } => password,
        }
    }

    /// The name part, for the verification cache.
    pub fn identity(&self) -> (&'static str, &str) {
        match self {
            Self::Password { id, .. } => ("pass", id),
            Self::UsernamePassword { username, .. } => ("user", username),
        }
    }
}

/// What a device presented, owned, to be checked on another thread.
pub struct OwnedPresented {
    username: bool,
    id: String,
    password: String,
}

impl From<&Presented<'_>> for OwnedPresented {
    fn from(presented: &Presented<'_>) -> Self {
        let (kind, id) = presented.identity();
        Self {
            username: kind == "user",
            id: id.to_owned(),
            password: presented.password().to_owned(),
        }
    }
}

impl OwnedPresented {
    pub fn as_presented(&self) -> Presented<'_> {
        if self.username {
            Presented::UsernamePassword {
                username: &self.id,
                password: &self.password,
            }
        } else {
            Presented::Password {
                id: &self.id,
                password: &self.password,
            }
        }
    }
}

/// Whether any stored credential accepts what was presented.
pub fn matches(stored: &[Credential], device_name: &str, presented: &Presented<'_>) -> bool {
    stored
        .iter()
        .any(|credential| match (credential, presented) {
            (Credential::Password(p), Presented::Password { password, .. }) => p.verify(password),
            (
                Credential::UsernamePassword {
                    username,
                    password: p,
                    unique,
                },
                Presented::Password { id, password },
            ) => (username == id && *unique || username == device_name) && p.verify(password),
            (Credential::Password(p), Presented::UsernamePassword { username, password }) => {
                *username == device_name && p.verify(password)
            }
            (
                Credential::UsernamePassword {
                    username: u,
                    password: p,
                    ..
                },
                Presented::UsernamePassword { username, password },
            ) => u == username && p.verify(password),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::credentials::{Password, TypedPassword};

    fn pass(p: &str) -> Credential {
        Credential::Password(Password::Typed(TypedPassword::Plain(p.into())))
    }

    fn user(u: &str, p: &str, unique: bool) -> Credential {
        Credential::UsernamePassword {
            username: u.into(),
            password: Password::Typed(TypedPassword::Plain(p.into())),
            unique,
        }
    }

    #[test]
    fn a_password_alone_matches_as_drogue_cloud_does() {
        let stored = [
            pass("p1"),
            user("u1", "p2", true),
            user("dev", "p3", false),
            user("other", "p4", false),
        ];
        let pw = |id, password| matches(&stored, "dev", &Presented::Password { id, password });
        assert!(pw("dev", "p1"));
        assert!(pw("u1", "p2"), "a unique username works as the device id");
        assert!(
            !pw("dev", "p2"),
            "a unique user's password needs its username"
        );
        assert!(pw("dev", "p3"), "a user named like the device");
        assert!(
            !pw("dev", "p4"),
            "another user's password is not the device's"
        );
        assert!(!pw("dev", "wrong"));
    }

    #[test]
    fn a_username_and_password_match_users_and_the_device_name() {
        let stored = [pass("p1"), user("u1", "p2", false)];
        let up = |username, password| {
            matches(
                &stored,
                "dev",
                &Presented::UsernamePassword { username, password },
            )
        };
        assert!(up("u1", "p2"));
        assert!(up("dev", "p1"), "the device's name with its password");
        assert!(!up("u1", "p1"));
        assert!(!up("other", "p1"));
    }
}
