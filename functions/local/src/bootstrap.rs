//! The first administrator: at first start, an access token for the user `admin`, with
//! the administrator role, is made, printed once and written to
//! `<data-dir>/admin-token` as `admin:<token>`. Later starts reuse the file while its
//! token is still valid.

use anyhow::Context;
use drogue_shared::access::{self, Authentication, Principal};
use drogue_shared::store::TokenStore;
use std::path::Path;

/// The administrator's user name.
pub const ADMIN_USER: &str = "admin";
/// The file in the data directory holding `admin:<token>`.
pub(crate) const TOKEN_FILE: &str = "admin-token";

/// `user:token` of the administrator.
pub struct AdminCredentials {
    pub user: String,
    pub token: String,
}

/// Makes sure an administrator token exists and is written to the data directory.
pub async fn ensure_admin(
    store: &dyn TokenStore,
    data_dir: &Path,
    admin_role: &str,
) -> anyhow::Result<AdminCredentials> {
    let path = data_dir.join(TOKEN_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path)
        && let Some((user, token)) = existing.trim().split_once(':')
        && matches!(
            access::authenticate(store, user, token).await?,
            Authentication::Allow(_)
        )
    {
        tracing::debug!(file = %path.display(), "administrator credentials");
        return Ok(AdminCredentials {
            user: user.to_owned(),
            token: token.to_owned(),
        });
    }
    let admin = Principal {
        user: ADMIN_USER.into(),
        name: None,
        roles: vec![admin_role.to_owned()],
    };
    let new =
        access::create_token(store, &admin, Some("bootstrapped by drogue-local".into())).await?;
    write_private(&path, &format!("{ADMIN_USER}:{}\n", new.token))
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "\nAdministrator created. Credentials (also in {}):\n\n    {ADMIN_USER}:{}\n\n\
         Log in with: drg login http://<address> --access-token {ADMIN_USER}:{}\n",
        path.display(),
        new.token,
        new.token
    );
    Ok(AdminCredentials {
        user: ADMIN_USER.to_owned(),
        token: new.token,
    })
}

/// Writes a file only its owner can read.
pub(crate) fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(content.as_bytes())
}
