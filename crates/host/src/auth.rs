//! Password hashing and permission checks of the host (a Mattermost role subset).

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;

use super::store::{HostStore, Result};

pub fn hash_password(pw: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// Constant-time through argon2's own verification.
pub fn verify_password(pw: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
}

/// Channel permissions granted to members (Mattermost's `channel_user`), plus what
/// channel admins get.
const CHANNEL_USER: &[&str] = &[
    "read_channel",
    "read_channel_content",
    "create_post",
    "add_reaction",
    "use_channel_mentions",
    "manage_public_channel_members",
    "manage_private_channel_members",
];
const CHANNEL_ADMIN: &[&str] = &[
    "manage_channel_roles",
    "manage_public_channel_properties",
    "manage_private_channel_properties",
];
const TEAM_ADMIN: &[&str] = &["manage_team", "manage_team_roles", "manage_channel_roles"];

pub async fn is_system_admin(store: &HostStore, user_id: &str) -> Result<bool> {
    Ok(store
        .user(user_id)
        .await?
        .is_some_and(|u| u.delete_at == 0 && u.is_system_admin()))
}

pub async fn has_permission(store: &HostStore, user_id: &str, _perm: &str) -> Result<bool> {
    // System-scope permissions (manage_system, ...) belong to system admins only.
    is_system_admin(store, user_id).await
}

pub async fn has_channel_permission(
    store: &HostStore,
    user_id: &str,
    channel_id: &str,
    perm: &str,
) -> Result<bool> {
    if is_system_admin(store, user_id).await? {
        return Ok(true);
    }
    let Some(channel) = store.channel(channel_id).await? else {
        return Ok(false);
    };
    if let Some(admin) = store.channel_member(channel_id, user_id).await? {
        if CHANNEL_USER.contains(&perm) || (admin && CHANNEL_ADMIN.contains(&perm)) {
            return Ok(true);
        }
    }
    if !channel.team_id.is_empty() {
        if let Some(true) = store.team_member(&channel.team_id, user_id).await? {
            return Ok(TEAM_ADMIN.contains(&perm));
        }
    }
    Ok(false)
}

pub async fn has_team_permission(
    store: &HostStore,
    user_id: &str,
    team_id: &str,
    perm: &str,
) -> Result<bool> {
    if is_system_admin(store, user_id).await? {
        return Ok(true);
    }
    Ok(match store.team_member(team_id, user_id).await? {
        Some(true) => TEAM_ADMIN.contains(&perm) || perm == "view_team",
        Some(false) => perm == "view_team",
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_with_the_right_secret() {
        let h = hash_password("s3cret-pass");
        assert!(verify_password("s3cret-pass", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("s3cret-pass", "not-a-hash"));
    }
}
