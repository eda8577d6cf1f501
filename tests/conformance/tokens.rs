//! Access tokens: by prefix, per user, deleted only by their owner.

use chrono::{DateTime, Utc};
use drogue_shared::store::{Conflict, StoreError, StoredToken};
use drogue_tests::TestStore;
use drogue_tests::suite::Case;

pub const CASES: &[Case<TestStore>] = &[(
    "tokens are kept per user and deleted only by their owner",
    |s| Box::pin(tokens(s)),
)];

fn token(user: &str, prefix: &str) -> StoredToken {
    StoredToken {
        prefix: prefix.into(),
        user: user.into(),
        name: Some(format!("{user}-name")),
        roles: vec!["role".into()],
        hash: format!("hash-of-{prefix}"),
        created: Utc::now(),
        description: Some(format!("{user}'s")),
        expires: None,
    }
}

async fn tokens(t: TestStore) {
    let s = t.store;
    for (user, prefix) in [
        ("alice", "drg_bbbbbb"),
        ("alice", "drg_aaaaaa"),
        ("bob", "drg_cccccc"),
    ] {
        s.create_token(&token(user, prefix)).await.unwrap();
    }
    let err = s
        .create_token(&token("mallory", "drg_aaaaaa"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::AlreadyExists)),
        "{err:?}"
    );

    let got = s.get_token("drg_aaaaaa").await.unwrap().unwrap();
    let mut expected = token("alice", "drg_aaaaaa");
    expected.created = got.created;
    assert_eq!(got, expected, "stored as given, with name and roles");

    // an expiry is kept as given
    let expires = DateTime::parse_from_rfc3339("2031-02-03T04:05:06.789Z")
        .unwrap()
        .to_utc();
    let expiring = StoredToken {
        expires: Some(expires),
        ..token("alice", "drg_dddddd")
    };
    s.create_token(&expiring).await.unwrap();
    let got = s.get_token("drg_dddddd").await.unwrap().unwrap();
    assert_eq!(got.expires, Some(expires));
    assert_eq!(
        s.list_tokens("alice").await.unwrap()[2].expires,
        Some(expires)
    );
    assert!(s.delete_token("alice", "drg_dddddd").await.unwrap());
    let alice: Vec<_> = s
        .list_tokens("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.prefix)
        .collect();
    assert_eq!(alice, ["drg_aaaaaa", "drg_bbbbbb"]);
    assert!(s.list_tokens("carol").await.unwrap().is_empty());

    assert!(
        !s.delete_token("bob", "drg_aaaaaa").await.unwrap(),
        "bob cannot delete alice's token"
    );
    assert!(s.get_token("drg_aaaaaa").await.unwrap().is_some());
    assert!(s.delete_token("alice", "drg_aaaaaa").await.unwrap());
    assert!(s.get_token("drg_aaaaaa").await.unwrap().is_none());
    assert!(!s.delete_token("alice", "drg_aaaaaa").await.unwrap());
    assert_eq!(s.list_tokens("alice").await.unwrap().len(), 1);
}
