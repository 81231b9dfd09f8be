//! Who may do what to which repository.
//!
//! A repository `<namespace>/<rest…>` belongs to the namespace's tenant.
//! Roles held on the tenant apply to all its namespaces; roles held on a
//! namespace apply to it alone. Owners and admins pull, push, delete and
//! create repositories; developers pull and push to repositories that exist;
//! viewers pull. Anyone may pull from a public namespace. The system
//! administrator may do everything, and a push of theirs to a namespace that
//! does not exist yet creates it, private, in the `default` tenant.

use std::time::Duration;

use damselfly_core::RepositoryName;

use super::cache::TtlCache;
use super::Principal;
use crate::metadata::{Binding, Db, Namespace, PrincipalRef, Role};

/// The actions on one repository.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// Read manifests, blobs, tags, referrers.
    pub pull: bool,
    /// Upload blobs and manifests.
    pub push: bool,
    /// Delete manifests, tags and blobs.
    pub delete: bool,
}

impl Actions {
    /// Whether `action` (`pull`, `push`, `delete`, `*`) is allowed.
    pub fn allows(&self, action: &str) -> bool {
        match action {
            "pull" => self.pull,
            "push" => self.push,
            "delete" => self.delete,
            "*" => self.pull && self.push && self.delete,
            _ => false,
        }
    }

    /// The allowed subset of `requested`, in the order asked.
    pub fn intersect(&self, requested: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in requested {
            if a == "*" {
                for x in ["pull", "push", "delete"] {
                    if self.allows(x) && !out.iter().any(|o| o == x) {
                        out.push(x.to_owned());
                    }
                }
            } else if self.allows(a) && !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    fn from_role(role: Role) -> Actions {
        match role {
            Role::Owner | Role::Admin => Actions { pull: true, push: true, delete: true },
            Role::Developer => Actions { pull: true, push: true, delete: false },
            Role::Viewer => Actions { pull: true, push: false, delete: false },
        }
    }
}

/// Decides with cached namespaces and role bindings (two seconds), so a
/// change made anywhere takes effect within seconds; what a token is granted
/// is decided on what the database holds at that moment
/// ([`Policy::repository_actions_now`]), since a token's grants outlive any cache.
pub struct Policy {
    namespaces: TtlCache<String, Option<Namespace>>,
    bindings: TtlCache<PrincipalRef, Vec<Binding>>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            namespaces: TtlCache::new(Duration::from_secs(2), 10_000),
            bindings: TtlCache::new(Duration::from_secs(2), 10_000),
        }
    }
}

/// Where a decision reads namespaces and role bindings from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// The two-second caches.
    Cached,
    /// The database, now.
    Fresh,
}

impl Policy {
    /// A namespace by name, cached.
    pub async fn namespace(&self, db: &Db, name: &str) -> Result<Option<Namespace>, sqlx::Error> {
        self.namespace_from(db, name, Reading::Cached).await
    }

    async fn namespace_from(&self, db: &Db, name: &str, reading: Reading) -> Result<Option<Namespace>, sqlx::Error> {
        if reading == Reading::Cached {
            if let Some(n) = self.namespaces.get(&name.to_owned()) {
                return Ok(n);
            }
        }
        let n = db.tenancy().namespace(name).await?;
        self.namespaces.put(name.to_owned(), n.clone());
        Ok(n)
    }

    /// A principal's role bindings, cached.
    pub async fn bindings(&self, db: &Db, who: PrincipalRef) -> Result<Vec<Binding>, sqlx::Error> {
        self.bindings_from(db, who, Reading::Cached).await
    }

    async fn bindings_from(&self, db: &Db, who: PrincipalRef, reading: Reading) -> Result<Vec<Binding>, sqlx::Error> {
        if reading == Reading::Cached {
            if let Some(b) = self.bindings.get(&who) {
                return Ok(b);
            }
        }
        let b = db.accounts().bindings_of(who).await?;
        self.bindings.put(who, b.clone());
        Ok(b)
    }

    /// Forgets cached state after a change made through this process.
    pub fn invalidate(&self) {
        self.namespaces.clear();
        self.bindings.clear();
    }

    /// The highest role a principal holds on a namespace.
    pub async fn role_on(&self, db: &Db, who: &Principal, ns: &Namespace) -> Result<Option<Role>, sqlx::Error> {
        self.role_from(db, who, ns, Reading::Cached).await
    }

    async fn role_from(
        &self,
        db: &Db,
        who: &Principal,
        ns: &Namespace,
        reading: Reading,
    ) -> Result<Option<Role>, sqlx::Error> {
        if who.is_system_admin() {
            return Ok(Some(Role::Owner));
        }
        if let Principal::Robot { tenant_id, .. } = who {
            if *tenant_id != ns.tenant_id {
                return Ok(None);
            }
        }
        let Some(r) = who.reference() else { return Ok(None) };
        let bindings = self.bindings_from(db, r, reading).await?;
        Ok(bindings
            .iter()
            .filter(|b| b.tenant_id == ns.tenant_id && b.namespace_id.is_none_or(|n| n == ns.id))
            .map(|b| b.role)
            .max())
    }

    /// What the principal may do to the repository, decided on the caches.
    pub async fn repository_actions(
        &self,
        db: &Db,
        who: &Principal,
        repo: &RepositoryName,
    ) -> Result<Actions, sqlx::Error> {
        self.actions(db, who, repo, Reading::Cached).await
    }

    /// What the principal may do to the repository, decided on what the
    /// database holds now: what a token is granted. Read after the
    /// principal's grants version, so that a token carrying grants that a
    /// change has since narrowed also carries the version that change left
    /// behind, and is refused.
    pub async fn repository_actions_now(
        &self,
        db: &Db,
        who: &Principal,
        repo: &RepositoryName,
    ) -> Result<Actions, sqlx::Error> {
        self.actions(db, who, repo, Reading::Fresh).await
    }

    async fn actions(
        &self,
        db: &Db,
        who: &Principal,
        repo: &RepositoryName,
        reading: Reading,
    ) -> Result<Actions, sqlx::Error> {
        let name = repo.as_str();
        let Some((namespace, _)) = name.split_once('/') else {
            // A repository lives in a namespace: `<namespace>/<name>`.
            return Ok(Actions::default());
        };
        let Some(ns) = self.namespace_from(db, namespace, reading).await? else {
            return Ok(if who.is_system_admin() {
                Actions { pull: true, push: true, delete: true }
            } else {
                Actions::default()
            });
        };
        let role = self.role_from(db, who, &ns, reading).await?;
        let mut actions = role.map(Actions::from_role).unwrap_or_default();
        if ns.public {
            actions.pull = true;
        }
        if actions.push && !matches!(role, Some(Role::Admin | Role::Owner)) {
            // Developers push to repositories that exist; creating one takes an admin.
            actions.push = db.repositories().find(name).await?.is_some();
        }
        Ok(actions)
    }
}
