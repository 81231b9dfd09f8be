//! Namespaces: creating one in a tenant, and a namespace's page with its
//! repositories, its visibility and the P2P acceleration switch.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::{done, failed, notice, render, segment, Chrome, ConsoleResult, Posted, SignedIn};
use crate::api::access::{self, NamespaceNeed};
use crate::api::namespaces::{self, Namespace, NamespaceChange, NewNamespace};
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
}

impl NamespacePage {
    fn action(&self) -> String {
        format!("/console/namespaces/{}", segment(&self.ns.name))
    }

    fn tenant_link(&self) -> String {
        format!("/console/tenants/{}", segment(&self.ns.tenant))
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
    Ok(render(&NamespacePage { chrome: who.chrome(&state, "tenants").await, ns, repositories, may_change }))
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
    let change = NamespaceChange { public: form.public, p2p_enabled: form.p2p_enabled };
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
