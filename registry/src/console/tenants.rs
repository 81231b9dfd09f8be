//! Tenants: the list, creating one (system administrator), and a tenant's
//! page with its namespaces and its members' roles.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::{done, failed, notice, render, role_name, segment, utc, Chrome, ConsoleResult, Posted, SignedIn};
use crate::api::access::{self, TenantNeed};
use crate::api::error::ApiError;
use crate::api::members::{Grant, Member, MemberKind, Revocation, Role};
use crate::api::namespaces::Namespace;
use crate::api::tenants::{NewTenant, Tenant};
use crate::api::{members, tenants, Body, Params, PathParams};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "tenants.html")]
struct TenantsPage {
    chrome: Chrome,
    /// Each tenant, and whether the user manages it (robots and clusters are for its admins).
    tenants: Vec<(Tenant, bool)>,
}

impl TenantsPage {
    fn link(&self, t: &Tenant) -> String {
        format!("/console/tenants/{}", segment(&t.name))
    }

    fn created(&self, t: &Tenant) -> String {
        utc(t.created_at)
    }
}

/// `GET /console/tenants`: the tenants the user holds a role in (all, for the system administrator).
pub async fn list(State(state): State<AppState>, who: SignedIn) -> ConsoleResult<Response> {
    let axum::Json(listed) = tenants::list(State(state.clone()), who.caller()).await?;
    let caller = who.caller();
    let mut tenants = Vec::with_capacity(listed.len());
    for t in listed {
        let manages = access::tenant(&state, &caller, &t.name, TenantNeed::Admin, None).await.is_ok();
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
    let Posted { who, form } = posted;
    let name = form.name.trim().to_owned();
    match tenants::create(State(state.clone()), who.caller(), Body(NewTenant { name: name.clone() })).await {
        Ok(_) => {
            let to = format!("/console/tenants/{}", segment(&name));
            done(&state, &who, &to, notice(format!("Tenant {name} created. Add namespaces and members below."))).await
        }
        Err(e) => failed(&state, &who, "/console/tenants", e.into()).await,
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

    fn ns_link(&self, n: &Namespace) -> String {
        format!("/console/namespaces/{}", segment(&n.name))
    }

    fn manages(&self) -> bool {
        self.members.is_some()
    }

    fn kind(&self, m: &Member) -> &'static str {
        match m.kind {
            MemberKind::User => "user",
            MemberKind::Robot => "robot",
        }
    }

    fn role(&self, r: &Role) -> &'static str {
        role_name(*r)
    }

    fn scope(&self, m: &Member) -> String {
        m.namespace.clone().unwrap_or_default()
    }
}

/// `GET /console/tenants/{tenant}`: its namespaces, and for its admins its members.
pub async fn show(State(state): State<AppState>, who: SignedIn, Path(name): Path<String>) -> ConsoleResult<Response> {
    let axum::Json(detail) = tenants::show(State(state.clone()), who.caller(), PathParams(name.clone())).await?;
    let members = match members::list(State(state.clone()), who.caller(), PathParams(name.clone())).await {
        Ok(axum::Json(m)) => Some(m),
        Err(ApiError::Denied(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let chrome = who.chrome(&state, "tenants").await;
    Ok(render(&TenantPage { chrome, name: detail.name, namespaces: detail.namespaces, members }))
}

/// The grant-a-role form.
#[derive(Deserialize)]
pub struct GrantForm {
    kind: MemberKind,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    role: Role,
}

fn optional(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// `POST /console/tenants/{tenant}/members`: grants a role.
pub async fn grant(State(state): State<AppState>, Path(tenant): Path<String>, posted: Posted<GrantForm>) -> Response {
    let Posted { who, form } = posted;
    let back = format!("/console/tenants/{}", segment(&tenant));
    let body = Grant {
        kind: form.kind,
        name: form.name.trim().to_owned(),
        namespace: optional(&form.namespace),
        role: form.role,
    };
    match members::grant(State(state.clone()), who.caller(), PathParams(tenant), Body(body)).await {
        Ok(axum::Json(m)) => {
            let on = m.namespace.map_or_else(|| "the whole tenant".to_owned(), |n| format!("namespace {n}"));
            done(&state, &who, &back, notice(format!("{} is now {} on {on}.", m.name, role_name(m.role)))).await
        }
        Err(e) => failed(&state, &who, &back, e.into()).await,
    }
}

/// The remove-a-role form.
#[derive(Deserialize)]
pub struct RevokeForm {
    kind: MemberKind,
    name: String,
    #[serde(default)]
    namespace: String,
}

/// `POST /console/tenants/{tenant}/members/revoke`: removes a role.
pub async fn revoke(State(state): State<AppState>, Path(tenant): Path<String>, posted: Posted<RevokeForm>) -> Response {
    let Posted { who, form } = posted;
    let back = format!("/console/tenants/{}", segment(&tenant));
    let query = Revocation { kind: form.kind, name: form.name.clone(), namespace: optional(&form.namespace) };
    match members::revoke(State(state.clone()), who.caller(), PathParams(tenant), Params(query)).await {
        Ok(_) => done(&state, &who, &back, notice(format!("Removed the role of {}.", form.name))).await,
        Err(e) => failed(&state, &who, &back, e.into()).await,
    }
}
