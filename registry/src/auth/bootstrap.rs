//! First start: the `default` tenant and the `admin` user.

use super::password;
use crate::metadata::{is_unique_violation, Db, PrincipalRef, Role};

/// The tenant every installation starts with.
pub const DEFAULT_TENANT: &str = "default";
/// The first administrator's login.
pub const ADMIN_USER: &str = "admin";

/// What happened at bootstrap, for the start-up banner.
pub enum Bootstrap {
    /// Users existed already.
    Existing,
    /// The admin was created with the password from the settings.
    CreatedWithConfiguredPassword,
    /// The admin was created with this generated password, shown once.
    CreatedWithGeneratedPassword(String),
}

/// Creates the default tenant and the admin user if there are no users yet.
pub async fn ensure_admin(db: &Db, configured_password: Option<&str>) -> Result<Bootstrap, sqlx::Error> {
    let tenant = match db.tenancy().tenant(DEFAULT_TENANT).await? {
        Some(t) => t,
        None => match db.tenancy().create_tenant(DEFAULT_TENANT).await {
            Ok(t) => t,
            // Another replica created it first.
            Err(e) if is_unique_violation(&e) => db.tenancy().tenant(DEFAULT_TENANT).await?.ok_or(e)?,
            Err(e) => return Err(e),
        },
    };
    if db.accounts().user_by_name(ADMIN_USER).await?.is_some() || !db.accounts().users().await?.is_empty() {
        return Ok(Bootstrap::Existing);
    }
    let (secret, generated) = match configured_password {
        Some(p) => (p.to_owned(), false),
        None => (password::random_secret(), true),
    };
    let hash = password::hash(secret.clone()).await.map_err(sqlx::Error::Protocol)?;
    let id = match db.accounts().create_user(ADMIN_USER, &hash, true).await {
        Ok(id) => id,
        Err(e) if is_unique_violation(&e) => return Ok(Bootstrap::Existing),
        Err(e) => return Err(e),
    };
    db.accounts().bind(PrincipalRef::User(id), tenant.id, None, Role::Owner).await?;
    Ok(if generated {
        Bootstrap::CreatedWithGeneratedPassword(secret)
    } else {
        Bootstrap::CreatedWithConfiguredPassword
    })
}
