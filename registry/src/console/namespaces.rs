//! Namespaces: creating one in a tenant, and a namespace's page with its
//! repositories, its visibility, the P2P acceleration switch and the
//! clusters its new tags are preheated into.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::{
    confirm, done, failed, human_bytes, notice, render, segment, utc, Chrome, Confirm, ConsoleResult, Kept, Posted,
    SignedIn,
};
use crate::metadata::RepositorySummary;
use crate::services::access::{self, Manage, Read};
use crate::services::names::Name;
use crate::services::namespaces::{self, Change, Namespace, PreheatTarget};
use crate::state::AppState;

/// Most repositories a namespace page lists.
const MAX_LISTED: i64 = 500;

#[derive(Template)]
#[template(path = "namespace.html")]
struct NamespacePage {
    chrome: Chrome,
    ns: Namespace,
    repositories: Vec<RepositorySummary>,
    may_change: bool,
    /// The tenant's clusters with the share of their agents new tags go to (0: none), for admins.
    clusters: Vec<(String, u8)>,
    /// The user manages the tenant, and so may open its Clusters page.
    manages_tenant: bool,
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

    fn repo_link(&self, r: &RepositorySummary) -> String {
        format!("/console/repository?name={}", segment(&r.name))
    }

    fn stored(&self, r: &RepositorySummary) -> String {
        human_bytes(u64::try_from(r.stored_bytes).unwrap_or(0))
    }

    fn last_push(&self, r: &RepositorySummary) -> String {
        r.last_push.map_or_else(|| "-".to_owned(), utc)
    }

    /// The preheat form of `cluster`'s row, if it came back with an error.
    fn kept_preheat(&self, cluster: &str) -> Kept<'_> {
        self.chrome.kept(&self.preheat_action()).row("cluster", cluster)
    }
}

/// `GET /console/namespaces/{namespace}`: its repositories and switches.
pub async fn show(State(state): State<AppState>, who: SignedIn, Path(name): Path<String>) -> ConsoleResult<Response> {
    let caller = who.caller();
    let access = access::namespace::<Read>(&state, &caller, &name, None).await?;
    let ns = namespaces::show(&state, &access).await?;
    // The same check a change makes decides whether the switches are shown; the POST checks again.
    let admin = access::namespace::<Manage>(&state, &caller, &name, None).await.ok();
    let may_change = admin.is_some();
    let repositories = namespaces::repositories(&state, &access, MAX_LISTED).await?;
    let clusters = match &admin {
        Some(admin) => namespaces::preheat_choices(&state, admin).await?,
        None => Vec::new(),
    };
    let manages_tenant = access::tenant::<Manage>(&state, &caller, &ns.tenant, None).await.is_ok();
    let chrome = who.chrome(&state, "tenants").await;
    Ok(render(&NamespacePage { chrome, ns, repositories, may_change, clusters, manages_tenant }))
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
    let Posted { who, form, kept, .. } = posted;
    let back = format!("/console/tenants/{}", segment(&tenant));
    let name = form.name.trim();
    let created = async {
        let attempt = namespaces::creating(name);
        let access = access::tenant::<Manage>(&state, &who.caller(), &tenant, Some(attempt)).await?;
        namespaces::create(&state, &access, &Name::namespace(name)?, form.public).await
    };
    match created.await {
        Ok(ns) => {
            let visibility = if ns.public { "public" } else { "private" };
            let text = format!("Namespace {} created ({visibility}). Switch on P2P acceleration on its page.", ns.name);
            done(&state, &who, &back, notice(text)).await
        }
        Err(e) => failed(&state, &who, &back, kept, e.into()).await,
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

/// What a confirmation says before a switch that exposes or slows something:
/// making a namespace public, or turning P2P acceleration off.
fn risky(name: &str, form: &SwitchForm, back: &str) -> Option<Confirm> {
    if form.public == Some(true) {
        return Some(Confirm {
            title: format!("Make namespace {name} public?"),
            consequence: format!(
                "Anyone who reaches the registry may then pull every image of {name}, without signing in: \
                 everything pushed there so far, and everything pushed later."
            ),
            button: "Make public".to_owned(),
            cancel: back.to_owned(),
        });
    }
    (form.p2p_enabled == Some(false)).then(|| Confirm {
        title: format!("Turn P2P acceleration off for {name}?"),
        consequence: format!(
            "Within seconds agents stop fetching the blobs of {name} from each other: every node pulls them from the \
             registry again, and preheating its new tags stops until acceleration is back on."
        ),
        button: "Turn P2P acceleration off".to_owned(),
        cancel: back.to_owned(),
    })
}

/// `POST /console/namespaces/{namespace}`: flips public/private or P2P acceleration (namespace admin or owner),
/// after a confirmation for making it public or turning acceleration off. Agents see the change within seconds:
/// the scheduler reads it through the two-second policy cache.
pub async fn update(State(state): State<AppState>, Path(name): Path<String>, posted: Posted<SwitchForm>) -> Response {
    let Posted { who, form, kept, confirmed } = posted;
    let back = format!("/console/namespaces/{}", segment(&name));
    if let (false, Some(question)) = (confirmed, risky(&name, &form, &back)) {
        return confirm(&state, &who, kept, question).await;
    }
    let change = Change { public: form.public, p2p_enabled: form.p2p_enabled, preheat_on_push: None };
    let updated = async {
        let access =
            access::namespace::<Manage>(&state, &who.caller(), &name, Some(namespaces::updating(&name))).await?;
        namespaces::update(&state, &access, change).await
    };
    match updated.await {
        Ok(ns) => {
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
        Err(e) => failed(&state, &who, &back, kept, e.into()).await,
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
    let Posted { who, form, kept, .. } = posted;
    let back = format!("/console/namespaces/{}", segment(&name));
    let caller = who.caller();
    let updated = async {
        // As the API would be asked: read the namespace's targets, then replace them.
        let current = namespaces::show(&state, &access::namespace::<Read>(&state, &caller, &name, None).await?).await?;
        let mut targets: Vec<PreheatTarget> =
            current.preheat_on_push.into_iter().filter(|t| t.cluster != form.cluster).collect();
        if form.percent > 0 {
            targets.push(PreheatTarget { cluster: form.cluster.clone(), percent: form.percent });
        }
        let access = access::namespace::<Manage>(&state, &caller, &name, Some(namespaces::updating(&name))).await?;
        namespaces::update(&state, &access, Change { preheat_on_push: Some(targets), ..Change::default() }).await
    };
    match updated.await {
        Ok(ns) => {
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
        Err(e) => failed(&state, &who, &back, kept, e.into()).await,
    }
}
