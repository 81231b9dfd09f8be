//! Tenants: the list, creating one (system administrator), and a tenant's
//! page with its namespaces and its members' roles.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::{
    confirm, done, failed, notice, render, role_name, segment, utc, Chrome, Confirm, ConsoleResult, Kept, Posted,
    SignedIn,
};
use crate::metadata::{Role, Tenant};
use crate::services::access::{self, Manage, Read};
use crate::services::members::{self, Grant, Member, MemberKind};
use crate::services::names::Name;
use crate::services::namespaces::{self, Namespace};
use crate::services::{tenants, Error};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "tenants.html")]
struct TenantsPage {
    chrome: Chrome,
    /// Each tenant, and whether the user manages it (robots and clusters are for its admins).
    tenants: Vec<(Tenant, bool)>,
}

impl TenantsPage {
    fn new_tenant(&self) -> Kept<'_> {
        self.chrome.kept("/console/tenants")
    }

    fn link(&self, t: &Tenant) -> String {
        format!("/console/tenants/{}", segment(&t.name))
    }

    fn created(&self, t: &Tenant) -> String {
        utc(t.created_at)
    }
}

/// `GET /console/tenants`: the tenants the user holds a role in (all, for the system administrator).
pub async fn list(State(state): State<AppState>, who: SignedIn) -> ConsoleResult<Response> {
    let caller = who.caller();
    let listed = tenants::visible(&state, &caller).await?;
    let mut tenants = Vec::with_capacity(listed.len());
    for t in listed {
        let manages = access::tenant::<Manage>(&state, &caller, &t.name, None).await.is_ok();
        tenants.push((t, manages));
    }
    Ok(render(&TenantsPage { chrome: who.chrome(&state, "tenants").await, tenants }))
}

/// The new-tenant form.
#[derive(Deserialize)]
pub struct TenantForm {
    #[serde(default)]
    name: String,
}

/// `POST /console/tenants`: creates a tenant (the API allows only the system administrator).
pub async fn create(State(state): State<AppState>, posted: Posted<TenantForm>) -> Response {
    let Posted { who, form, kept, .. } = posted;
    let name = form.name.trim();
    let created = async {
        let admin = access::system_admin(&state, &who.caller(), Some(tenants::creating(name))).await?;
        tenants::create(&state, &admin, &Name::tenant(name)?).await
    };
    match created.await {
        Ok(_) => {
            let to = format!("/console/tenants/{}", segment(name));
            done(&state, &who, &to, notice(format!("Tenant {name} created. Add namespaces and members below."))).await
        }
        Err(e) => failed(&state, &who, "/console/tenants", kept, e.into()).await,
    }
}

#[derive(Template)]
#[template(path = "tenant.html")]
struct TenantPage {
    chrome: Chrome,
    name: String,
    namespaces: Vec<Namespace>,
    /// `None` when the user may not manage the tenant.
    members: Option<Vec<Member>>,
}

impl TenantPage {
    fn base(&self) -> String {
        format!("/console/tenants/{}", segment(&self.name))
    }

    fn new_namespace(&self) -> Kept<'_> {
        self.chrome.kept(&format!("/console/tenants/{}/namespaces", segment(&self.name)))
    }

    fn new_grant(&self) -> Kept<'_> {
        self.chrome.kept(&format!("/console/tenants/{}/members", segment(&self.name)))
    }

    fn ns_link(&self, n: &Namespace) -> String {
        format!("/console/namespaces/{}", segment(&n.name))
    }

    fn manages(&self) -> bool {
        self.members.is_some()
    }

    fn kind(&self, m: &Member) -> &'static str {
        m.kind.as_str()
    }

    fn role(&self, r: &Role) -> &'static str {
        role_name(*r)
    }

    fn scope(&self, m: &Member) -> String {
        m.namespace.clone().unwrap_or_default()
    }

    /// A namespace the grant form named that is not among the tenant's,
    /// kept so the form shows what was sent.
    fn stray_namespace(&self) -> Option<&str> {
        let kept = self.new_grant().value("namespace");
        (!kept.is_empty() && !self.namespaces.iter().any(|n| n.name == kept)).then_some(kept)
    }
}

/// `GET /console/tenants/{tenant}`: its namespaces, and for its admins its members.
pub async fn show(State(state): State<AppState>, who: SignedIn, Path(name): Path<String>) -> ConsoleResult<Response> {
    let caller = who.caller();
    let access = access::tenant::<Read>(&state, &caller, &name, None).await?;
    let namespaces = namespaces::visible(&state, &access).await?;
    let members = match access::tenant::<Manage>(&state, &caller, &name, None).await {
        Ok(admin) => Some(members::list(&state, &admin).await?),
        Err(Error::Denied(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let chrome = who.chrome(&state, "tenants").await;
    Ok(render(&TenantPage { chrome, name: access.tenant().name.clone(), namespaces, members }))
}

/// User or robot, as the forms name them.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum KindField {
    User,
    Robot,
}

impl From<KindField> for MemberKind {
    fn from(k: KindField) -> Self {
        match k {
            KindField::User => MemberKind::User,
            KindField::Robot => MemberKind::Robot,
        }
    }
}

/// A role, as the forms name them.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RoleField {
    Owner,
    Admin,
    Developer,
    Viewer,
}

impl From<RoleField> for Role {
    fn from(r: RoleField) -> Self {
        match r {
            RoleField::Owner => Role::Owner,
            RoleField::Admin => Role::Admin,
            RoleField::Developer => Role::Developer,
            RoleField::Viewer => Role::Viewer,
        }
    }
}

/// The grant-a-role form.
#[derive(Deserialize)]
pub struct GrantForm {
    kind: KindField,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    role: RoleField,
}

fn optional(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// `POST /console/tenants/{tenant}/members`: grants a role.
pub async fn grant(State(state): State<AppState>, Path(tenant): Path<String>, posted: Posted<GrantForm>) -> Response {
    let Posted { who, form, kept, .. } = posted;
    let back = format!("/console/tenants/{}", segment(&tenant));
    let grant = Grant {
        kind: form.kind.into(),
        name: form.name.trim().to_owned(),
        namespace: optional(&form.namespace),
        role: form.role.into(),
    };
    let granted = async {
        let attempt = members::granting(grant.kind, &grant.name);
        let access = access::tenant::<Manage>(&state, &who.caller(), &tenant, Some(attempt)).await?;
        members::grant(&state, &access, grant).await
    };
    match granted.await {
        Ok(m) => {
            let on = m.namespace.map_or_else(|| "the whole tenant".to_owned(), |n| format!("namespace {n}"));
            done(&state, &who, &back, notice(format!("{} is now {} on {on}.", m.name, role_name(m.role)))).await
        }
        Err(e) => failed(&state, &who, &back, kept, e.into()).await,
    }
}

/// The remove-a-role form.
#[derive(Deserialize)]
pub struct RevokeForm {
    kind: KindField,
    name: String,
    #[serde(default)]
    namespace: String,
}

/// `POST /console/tenants/{tenant}/members/revoke`: after a confirmation, removes a role.
pub async fn revoke(State(state): State<AppState>, Path(tenant): Path<String>, posted: Posted<RevokeForm>) -> Response {
    let Posted { who, form, kept, confirmed } = posted;
    let back = format!("/console/tenants/{}", segment(&tenant));
    let kind = MemberKind::from(form.kind);
    if !confirmed {
        let on = optional(&form.namespace).map_or_else(|| format!("tenant {tenant}"), |n| format!("namespace {n}"));
        let question = Confirm {
            title: format!("Remove the role of {} on {on}?", form.name),
            consequence: format!(
                "{} no longer gets what the role on {on} allows: pulls, pushes or management there are refused. The \
                 role can be granted again later.",
                form.name
            ),
            button: "Remove role".to_owned(),
            cancel: back,
        };
        return confirm(&state, &who, kept, question).await;
    }
    let revoked = async {
        let attempt = members::revoking(kind, &form.name);
        let access = access::tenant::<Manage>(&state, &who.caller(), &tenant, Some(attempt)).await?;
        members::revoke(&state, &access, kind, &form.name, optional(&form.namespace).as_deref()).await
    };
    match revoked.await {
        Ok(()) => done(&state, &who, &back, notice(format!("Removed the role of {}.", form.name))).await,
        Err(e) => failed(&state, &who, &back, kept, e.into()).await,
    }
}
