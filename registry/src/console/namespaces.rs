//! Namespaces: creating one in a tenant, and a namespace's page with its
//! repositories, its visibility, the P2P acceleration switch and the
//! clusters its new tags are preheated into.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::{done, failed, notice, render, segment, Chrome, ConsoleResult, Posted, SignedIn};
use crate::api::access::{self, NamespaceNeed};
use crate::api::namespaces::{self, Namespace, NamespaceChange, NewNamespace, PreheatTarget};
use crate::api::{Body, PathParams};
use crate::state::AppState;

/// Most repositories a namespace page lists.
const MAX_LISTED: i64 = 500;

#[derive(Template)]
#[template(path = "namespace.html")]
struct NamespacePage {
    chrome: Chrome,
    ns: Namespace,
    repositories: Vec<String>,
    may_change: bool,
    /// The tenant's clusters with the share of their agents new tags go to (0: none), for admins.
    clusters: Vec<(String, u8)>,
}

impl NamespacePage {
    fn action(&self) -> String {
        format!("/console/namespaces/{}", segment(&self.ns.name))
    }

    fn tenant_link(&self) -> String {
        format!("/console/tenants/{}", segment(&self.ns.tenant))
    }

    fn preheat_action(&self) -> String {
        format!("/console/namespaces/{}/preheat", segment(&self.ns.name))
    }

    fn repo_link(&self, name: &str) -> String {
        format!("/console/repository?name={}", segment(name))
    }
}

/// `GET /console/namespaces/{namespace}`: its repositories and switches.
pub async fn show(State(state): State<AppState>, who: SignedIn, Path(name): Path<String>) -> ConsoleResult<Response> {
    let caller = who.caller();
    let axum::Json(ns) = namespaces::show(State(state.clone()), caller, PathParams(name.clone())).await?;
    // The same check the PATCH endpoint makes decides whether the switches are shown; the POST checks again.
    let may_change = access::namespace(&state, &who.caller(), &name, NamespaceNeed::Admin, None).await.is_ok();
    let repositories = state.db.repositories().in_namespace(&ns.name, MAX_LISTED).await?;
    let mut clusters = Vec::new();
    if may_change {
        if let Some(tenant) = state.db.tenancy().tenant(&ns.tenant).await? {
            for c in state.db.clusters().of_tenant(tenant.id).await? {
                let percent = ns.preheat_on_push.iter().find(|t| t.cluster == c.name).map_or(0, |t| t.percent);
                clusters.push((c.name, percent));
            }
        }
    }
    let chrome = who.chrome(&state, "tenants").await;
    Ok(render(&NamespacePage { chrome, ns, repositories, may_change, clusters }))
}

/// The new-namespace form.
#[derive(Deserialize)]
pub struct NamespaceForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    public: bool,
}

/// `POST /console/tenants/{tenant}/namespaces`: creates a namespace (tenant admin or owner).
pub async fn create(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    posted: Posted<NamespaceForm>,
) -> Response {
    let Posted { who, form } = posted;
    let back = format!("/console/tenants/{}", segment(&tenant));
    let body = NewNamespace { name: form.name.trim().to_owned(), public: form.public };
    match namespaces::create(State(state.clone()), who.caller(), PathParams(tenant), Body(body)).await {
        Ok((_, axum::Json(ns))) => {
            let visibility = if ns.public { "public" } else { "private" };
            let text = format!("Namespace {} created ({visibility}). Switch on P2P acceleration on its page.", ns.name);
            done(&state, &who, &back, notice(text)).await
        }
        Err(e) => failed(&state, &who, &back, e.into()).await,
    }
}

/// The switches of a namespace; a field left out stays as it is.
#[derive(Deserialize)]
pub struct SwitchForm {
    #[serde(default)]
    public: Option<bool>,
    #[serde(default)]
    p2p_enabled: Option<bool>,
}

/// `POST /console/namespaces/{namespace}`: flips public/private or P2P acceleration (namespace admin or owner).
/// Agents see the change within seconds: the scheduler reads it through the two-second policy cache.
pub async fn update(State(state): State<AppState>, Path(name): Path<String>, posted: Posted<SwitchForm>) -> Response {
    let Posted { who, form } = posted;
    let back = format!("/console/namespaces/{}", segment(&name));
    let change = NamespaceChange { public: form.public, p2p_enabled: form.p2p_enabled, preheat_on_push: None };
    match namespaces::update(State(state.clone()), who.caller(), PathParams(name), Body(change)).await {
        Ok(axum::Json(ns)) => {
            let mut said = Vec::new();
            if let Some(p) = form.p2p_enabled {
                said.push(if p {
                    "P2P acceleration is on: agents fetch its blobs from peers within seconds".to_owned()
                } else {
                    "P2P acceleration is off: agents pass its blobs straight through from the registry".to_owned()
                });
            }
            if let Some(p) = form.public {
                said.push(if p { "it is public: anyone may pull".to_owned() } else { "it is private".to_owned() });
            }
            let text = format!("Namespace {}: {}.", ns.name, said.join("; "));
            done(&state, &who, &back, notice(text)).await
        }
        Err(e) => failed(&state, &who, &back, e.into()).await,
    }
}

/// One row of the preheat-on-push form.
#[derive(Deserialize)]
pub struct PreheatForm {
    #[serde(default)]
    cluster: String,
    /// Share of the cluster's agents; 0 stops preheating new tags there.
    #[serde(default)]
    percent: u8,
}

/// `POST /console/namespaces/{namespace}/preheat`: starts or stops preheating the namespace's
/// new tags into one cluster (namespace admin or owner; the API checks the cluster is the tenant's).
pub async fn preheat(State(state): State<AppState>, Path(name): Path<String>, posted: Posted<PreheatForm>) -> Response {
    let Posted { who, form } = posted;
    let back = format!("/console/namespaces/{}", segment(&name));
    let current = match namespaces::show(State(state.clone()), who.caller(), PathParams(name.clone())).await {
        Ok(axum::Json(ns)) => ns.preheat_on_push,
        Err(e) => return failed(&state, &who, &back, e.into()).await,
    };
    let mut targets: Vec<PreheatTarget> = current.into_iter().filter(|t| t.cluster != form.cluster).collect();
    if form.percent > 0 {
        targets.push(PreheatTarget { cluster: form.cluster.clone(), percent: form.percent });
    }
    let change = NamespaceChange { public: None, p2p_enabled: None, preheat_on_push: Some(targets) };
    match namespaces::update(State(state.clone()), who.caller(), PathParams(name), Body(change)).await {
        Ok(axum::Json(ns)) => {
            let text = if form.percent > 0 {
                let off = if ns.p2p_enabled { "" } else { " once P2P acceleration is on" };
                format!(
                    "New tags of {} are preheated into cluster {} ({}% of its online agents){off}.",
                    ns.name, form.cluster, form.percent
                )
            } else {
                format!("New tags of {} are no longer preheated into cluster {}.", ns.name, form.cluster)
            };
            done(&state, &who, &back, notice(text)).await
        }
        Err(e) => failed(&state, &who, &back, e.into()).await,
    }
}
