//! The sample events of `events/` and the access token they carry.

use drogue_shared::store::{StoredToken, TokenStore};

/// The access token in the `events/` fixtures (user `admin`).
pub const FIXTURE_TOKEN: &str = "drg_fixtur_eventsfixturetokenfortests00004Vhpv5";

/// The text of an event fixture from `events/`.
pub fn event_text(name: &str) -> String {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An event fixture from `events/`, parsed.
pub fn event(name: &str) -> serde_json::Value {
    serde_json::from_str(&event_text(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Stores [`FIXTURE_TOKEN`] for the user `admin` with `roles`.
pub async fn store_fixture_token(store: &dyn TokenStore, roles: Vec<String>) {
    store
        .create_token(&StoredToken {
            prefix: drogue_shared::access::token_format::prefix_of(FIXTURE_TOKEN)
                .unwrap()
                .into(),
            user: "admin".into(),
            name: None,
            roles,
            hash: drogue_shared::access::token_format::hash(FIXTURE_TOKEN),
            created: chrono::Utc::now(),
            description: None,
            expires: None,
        })
        .await
        .unwrap();
}
