//! Names that must be unique, held by one device or one application.
//!
//! Within an application a device's name, its aliases and its unique usernames share one
//! namespace, as in Drogue Cloud: a device can be found by any of them, so no two
//! devices may hold the same one. Trust anchor subjects are not unique: they index the
//! applications holding a trust anchor, so that a client certificate's issuer finds the
//! applications that may trust it (several applications, of any owners, may hold the
//! same one; see `docs/security.md`).

/// A name held by a device (within its application, exclusively) or by an application
/// (a trust anchor subject, in a shared index).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Claim {
    /// The device's own name.
    Name(String),
    /// An entry of `spec.alias`.
    Alias(String),
    /// The username of a `user` credential with `unique: true`.
    Username(String),
    /// The subject of one of an application's valid trust anchors.
    TrustAnchor(String),
}

impl Claim {
    /// The unique value; device claims of every kind share one namespace.
    pub fn key(&self) -> &str {
        match self {
            Self::Name(v) | Self::Alias(v) | Self::Username(v) | Self::TrustAnchor(v) => v,
        }
    }

    /// A description for error messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Name(v) => format!("name '{v}'"),
            Self::Alias(v) => format!("alias '{v}'"),
            Self::Username(v) => format!("unique username '{v}'"),
            Self::TrustAnchor(v) => format!("trust anchor subject '{v}'"),
        }
    }
}

/// Keeps the first claim of each key, ordered by key.
pub fn without_repeats(mut claims: Vec<Claim>) -> Vec<Claim> {
    claims.sort_by(|a, b| a.key().cmp(b.key()));
    claims.dedup_by(|a, b| a.key() == b.key());
    claims
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_of_every_kind_share_keys() {
        let claims = without_repeats(vec![
            Claim::Alias("x".into()),
            Claim::Username("x".into()),
            Claim::Name("a".into()),
        ]);
        assert_eq!(claims, [Claim::Name("a".into()), Claim::Alias("x".into())]);
    }
}
