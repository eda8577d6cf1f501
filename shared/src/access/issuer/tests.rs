use super::*;
use crate::access::Authentication;

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
// RFC 7636 appendix B
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn issuer(dir: &Path) -> Issuer {
    let mut config = IssuerConfig::new("http://127.0.0.1:8080/sso", dir, "drogue-admin");
    config.admin_password = Some("correct horse".into());
    Issuer::open(config).unwrap().0
}

fn request(client: &str, redirect: &str) -> AuthorizationRequest {
    AuthorizationRequest {
        client_id: client.into(),
        redirect_uri: redirect.into(),
        state: Some("s".into()),
        nonce: Some("n".into()),
        scope: Some("openid offline_access".into()),
        code_challenge: CHALLENGE.into(),
    }
}

#[test]
fn pkce_is_checked_as_rfc_7636_says() {
    assert!(pkce_matches(VERIFIER, CHALLENGE));
    assert!(!pkce_matches(&VERIFIER.replace('d', "e"), CHALLENGE));
    // plain (the verifier as its own challenge) is not S256
    assert!(!pkce_matches(VERIFIER, VERIFIER));
    // too short and badly formed verifiers are refused
    assert!(!pkce_matches("abc", CHALLENGE));
    assert!(!pkce_matches(&format!("{VERIFIER} "), CHALLENGE));
}

#[test]
fn clients_may_only_redirect_where_they_belong() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer(dir.path());
    for ok in [
        "http://localhost:41234",
        "http://127.0.0.1:5/cb?x=1",
        "http://[::1]:8000/",
        "http://localhost",
    ] {
        assert_eq!(issuer.check_client(CLI_CLIENT, ok), Ok(()), "{ok}");
    }
    for bad in [
        "https://localhost:1",
        "http://localhost.evil.example:1",
        "http://evil.example/http://localhost",
        "http://user@evil.example:1",
        "http://localhost@evil.example",
        "javascript:alert(1)",
    ] {
        assert!(issuer.check_client(CLI_CLIENT, bad).is_err(), "{bad}");
    }
    assert_eq!(
        issuer.check_client(CONSOLE_CLIENT, "http://127.0.0.1:8080/console/callback"),
        Ok(())
    );
    assert!(
        issuer
            .check_client(CONSOLE_CLIENT, "http://127.0.0.1:8080.evil.example/")
            .is_err()
    );
    assert!(
        issuer
            .check_client(CONSOLE_CLIENT, "http://localhost:41234")
            .is_err()
    );
    assert_eq!(
        issuer.check_client("other", "http://localhost:1"),
        Err(RequestError::UnknownClient("other".into()))
    );
}

#[tokio::test]
async fn a_code_is_exchanged_once_by_its_client_with_its_verifier() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer(dir.path());
    let roles = issuer.login("admin", "correct horse").await.unwrap();
    assert_eq!(roles, vec!["drogue-admin".to_owned()]);
    assert!(issuer.login("admin", "wrong horse").await.is_none());
    assert!(issuer.login("nobody", "correct horse").await.is_none());

    let redirect = "http://localhost:4000";
    let code = issuer.issue_code(request(CLI_CLIENT, redirect), "admin", roles.clone());
    assert_eq!(
        issuer
            .exchange_code(&code, CLI_CLIENT, redirect, &VERIFIER.replace('d', "e"))
            .unwrap_err(),
        GrantError::InvalidGrant("the PKCE code verifier does not match the challenge")
    );
    // a failed exchange used the code up
    assert!(
        issuer
            .exchange_code(&code, CLI_CLIENT, redirect, VERIFIER)
            .is_err()
    );

    let code = issuer.issue_code(request(CLI_CLIENT, redirect), "admin", roles.clone());
    assert!(matches!(
        issuer.exchange_code(&code, CONSOLE_CLIENT, redirect, VERIFIER),
        Err(GrantError::InvalidGrant(_))
    ));
    let code = issuer.issue_code(request(CLI_CLIENT, redirect), "admin", roles.clone());
    assert!(
        issuer
            .exchange_code(&code, CLI_CLIENT, "http://localhost:4001", VERIFIER)
            .is_err()
    );

    let code = issuer.issue_code(request(CLI_CLIENT, redirect), "admin", roles);
    let tokens = issuer
        .exchange_code(&code, CLI_CLIENT, redirect, VERIFIER)
        .unwrap();
    assert!(
        issuer
            .exchange_code(&code, CLI_CLIENT, redirect, VERIFIER)
            .is_err()
    );

    // the access token is one the API accepts, with the user and the roles
    let verifier = issuer.verifier();
    match verifier.verify(&tokens.access_token).await.unwrap() {
        Authentication::Allow(principal) => {
            assert_eq!(principal.user, "admin");
            assert!(principal.has_role("drogue-admin"));
        }
        other => panic!("{other:?}"),
    }
    // the ID token is not an access token (its audience is the client)
    let id_as_access = verifier.verify(&tokens.id_token).await.unwrap();
    assert!(
        matches!(id_as_access, Authentication::Deny { .. }),
        "{id_as_access:?}"
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_and_logout_ends_them() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer(dir.path());
    let redirect = "http://localhost:4000";
    let code = issuer.issue_code(request(CLI_CLIENT, redirect), "admin", vec![]);
    let first = issuer
        .exchange_code(&code, CLI_CLIENT, redirect, VERIFIER)
        .unwrap();

    let second = issuer
        .refresh(&first.refresh_token, Some(CLI_CLIENT))
        .unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(
        issuer.refresh(&first.refresh_token, None).unwrap_err(),
        GrantError::InvalidGrant("unknown, used or expired refresh token")
    );
    // the roles come from the user again
    assert!(
        matches!(issuer.verifier().verify(&second.access_token).await.unwrap(),
        Authentication::Allow(p) if p.has_role("drogue-admin"))
    );
    assert!(matches!(
        issuer.refresh(&second.refresh_token, Some(CONSOLE_CLIENT)),
        Err(GrantError::InvalidGrant(_))
    ));

    let code = issuer.issue_code(request(CLI_CLIENT, redirect), "admin", vec![]);
    let other_login = issuer
        .exchange_code(&code, CLI_CLIENT, redirect, VERIFIER)
        .unwrap();
    let third = issuer.refresh(&other_login.refresh_token, None).unwrap();

    let sid = issuer.session_of(&third.id_token).unwrap();
    assert_eq!(issuer.end_session(&sid), 1);
    assert!(issuer.refresh(&third.refresh_token, None).is_err());
    assert!(issuer.session_of("not.a.token").is_none());
}

#[tokio::test]
async fn keys_and_users_outlive_a_restart_and_passwords_are_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let (first, generated) = Issuer::open(IssuerConfig::new(
        "http://h/sso",
        dir.path(),
        "drogue-admin",
    ))
    .unwrap();
    let password = generated.expect("a generated password");
    assert_eq!(password.len(), 16);
    first
        .users()
        .add("alice", "alice's secret", vec![])
        .unwrap();
    assert!(matches!(
        first.users().add("alice", "another secret", vec![]),
        Err(UserError::Exists(_))
    ));
    assert!(matches!(
        first.users().add("bob", "short", vec![]),
        Err(UserError::WeakPassword)
    ));
    assert!(matches!(
        first.users().add("b/b", "long enough", vec![]),
        Err(UserError::InvalidName)
    ));

    let stored = std::fs::read_to_string(dir.path().join("users.json")).unwrap();
    assert!(!stored.contains(&password) && !stored.contains("alice's secret"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["users.json", "sso-key.pem"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{file} is private");
        }
    }

    let code = first.issue_code(request(CLI_CLIENT, "http://localhost:1"), "alice", vec![]);
    let tokens = first
        .exchange_code(&code, CLI_CLIENT, "http://localhost:1", VERIFIER)
        .unwrap();

    let (second, generated) = Issuer::open(IssuerConfig::new(
        "http://h/sso",
        dir.path(),
        "drogue-admin",
    ))
    .unwrap();
    assert!(generated.is_none(), "the administrator is made once");
    assert!(second.login("admin", &password).await.is_some());
    assert!(second.login("alice", "alice's secret").await.is_some());
    // the same key: tokens made before the restart are good after it
    assert!(matches!(
        second.verifier().verify(&tokens.access_token).await.unwrap(),
        Authentication::Allow(p) if p.user == "alice"
    ));
    // removed users cannot log in
    assert!(second.users().remove("alice").unwrap());
    assert!(second.login("alice", "alice's secret").await.is_none());
}

#[tokio::test]
async fn tokens_of_another_key_or_issuer_are_refused() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let a = issuer(one.path());
    let b = issuer(two.path());
    let code = b.issue_code(request(CLI_CLIENT, "http://localhost:1"), "admin", vec![]);
    let foreign = b
        .exchange_code(&code, CLI_CLIENT, "http://localhost:1", VERIFIER)
        .unwrap();
    assert!(matches!(
        a.verifier().verify(&foreign.access_token).await.unwrap(),
        Authentication::Deny { .. }
    ));
    assert!(a.session_of(&foreign.id_token).is_none());
}
