//! A repository's page: its tags with digest, size, media type, push time
//! and, for indexes, their platforms; the pull commands through the registry
//! and through the acceleration address; deleting a tag; preheating a tag
//! into a cluster's agents.
//!
//! Access is the repository policy the Distribution API uses: `pull` to see
//! the page, `delete` to delete a tag; preheat, as in the API, is for admins
//! and owners of the namespace's tenant.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use damselfly_core::RepositoryName;
use serde::Deserialize;
use serde_json::Value;

use super::{
    confirm, done, failed, human_bytes, notice, render, segment, utc, Chrome, Clients, Confirm, ConsoleResult, Kept,
    Posted, SignedIn,
};
use crate::services::access::{self, Manage};
use crate::services::preheat::{self, Percent, PreheatTrigger};
use crate::services::repositories::{self, ImageSize, Tagged};
use crate::services::{clusters, Error, Thing};
use crate::state::AppState;

/// Most tags a repository page lists.
const MAX_LISTED: i64 = 1000;

/// The address of the agent on the machine it runs on, as `damselfly-agent run` listens by default.
const LOCAL_AGENT: &str = "127.0.0.1:65001";

/// One tag as listed.
struct TagRow {
    name: String,
    digest: String,
    media_type: String,
    /// What a pull fetches: one line for an image, one per platform for an index.
    sizes: Vec<String>,
    /// The sizes are per platform.
    per_platform: bool,
    pushed: String,
    /// An artifact's type (its `artifactType`, else a config media type that is not an image's).
    artifact_type: Option<String>,
    /// The titles of an artifact's files (`org.opencontainers.image.title` of its layers).
    files: Vec<String>,
}

#[derive(Template)]
#[template(path = "repository.html")]
struct RepositoryPage {
    chrome: Chrome,
    name: String,
    namespace: String,
    tags: Vec<TagRow>,
    may_delete: bool,
    /// The tenant's clusters, when the user may preheat into them.
    clusters: Vec<String>,
    /// The namespace's tenant, when the user manages it (and so may set up clusters).
    managed_tenant: Option<String>,
    /// `host[:port]` of the registry, and how clients reach it.
    clients: Clients,
    /// The acceleration address: a node's agent, by a name or at 127.0.0.1.
    acceleration: String,
}

impl RepositoryPage {
    fn namespace_link(&self) -> String {
        format!("/console/namespaces/{}", segment(&self.namespace))
    }

    fn clusters_link(&self, tenant: &str) -> String {
        format!("/console/tenants/{}/clusters", segment(tenant))
    }

    /// The preheat form of tag `tag`, if it came back with an error.
    fn kept_preheat(&self, tag: &str) -> Kept<'_> {
        self.chrome.kept("/console/repository/preheat").row("tag", tag)
    }

    /// `<registry>/<repo>:<tag>`.
    fn registry_ref(&self, t: &TagRow) -> String {
        format!("{}/{}:{}", self.clients.host, self.name, t.name)
    }

    /// `<acceleration address>/<repo>:<tag>`.
    fn accelerated_ref(&self, t: &TagRow) -> String {
        format!("{}/{}:{}", self.acceleration, self.name, t.name)
    }

    /// `127.0.0.1:65001/<repo>:<tag>`: through an agent run by hand on this machine.
    fn local_ref(&self, t: &TagRow) -> String {
        format!("{LOCAL_AGENT}/{}:{}", self.name, t.name)
    }

    /// The acceleration address is the node's own agent at 127.0.0.1, not a name.
    fn accelerated_locally(&self) -> bool {
        self.acceleration == LOCAL_AGENT
    }

    /// `podman pull` through the acceleration address: at 127.0.0.1 the
    /// agent speaks plain HTTP, and only node-setup tells podman so.
    fn accelerated_podman_flag(&self) -> &'static str {
        if self.accelerated_locally() {
            " --tls-verify=false"
        } else {
            ""
        }
    }
}

/// Which repository.
#[derive(Deserialize)]
pub struct Which {
    #[serde(default)]
    name: String,
}

fn parse_name(name: &str) -> Result<RepositoryName, Error> {
    name.parse().map_err(|e: damselfly_core::NameError| {
        Error::invalid(
            Thing::Repository,
            format!("{name:?} is not a repository name ({e}); open it from its namespace's page"),
        )
    })
}

/// What an artifact (not an image) says it is: its `artifactType`, or else a
/// config media type other than an image config's.
fn artifact_type(content: &Value) -> Option<String> {
    const IMAGE_CONFIGS: [&str; 2] =
        ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];
    let declared = content["artifactType"].as_str();
    let config = content["config"]["mediaType"].as_str().filter(|t| !IMAGE_CONFIGS.contains(t));
    declared.or(config).filter(|t| !t.is_empty()).map(str::to_owned)
}

/// The titles of a manifest's layers, as `oras push` and `damselfly-agent get --file` name files.
fn files(content: &Value) -> Vec<String> {
    let Some(layers) = content["layers"].as_array() else { return Vec::new() };
    layers
        .iter()
        .filter_map(|l| l["annotations"]["org.opencontainers.image.title"].as_str())
        .map(str::to_owned)
        .collect()
}

/// A size as listed: `3.0 KiB`, or `linux/arm64: 3.0 KiB` for an index's entry.
fn size_line(s: &ImageSize) -> String {
    let bytes = s.bytes.map_or_else(|| "not in this repository".to_owned(), human_bytes);
    match &s.platform {
        Some(p) => format!("{p}: {bytes}"),
        None => bytes,
    }
}

fn row(t: Tagged) -> TagRow {
    let Tagged { detail: t, sizes } = t;
    let content: Value = serde_json::from_slice(&t.content).unwrap_or(Value::Null);
    TagRow {
        per_platform: sizes.iter().any(|s| s.platform.is_some()),
        sizes: sizes.iter().map(size_line).collect(),
        artifact_type: artifact_type(&content),
        files: files(&content),
        pushed: utc(t.pushed_at),
        name: t.name,
        digest: t.digest,
        media_type: t.media_type,
    }
}

/// `GET /console/repository?name=<repository>`: its tags and pull commands.
pub async fn show(State(state): State<AppState>, who: SignedIn, Query(which): Query<Which>) -> ConsoleResult<Response> {
    let name = parse_name(&which.name)?;
    let caller = who.caller();
    let listed = repositories::tags(&state, &caller, &name, MAX_LISTED).await?;
    let tags = listed.tags.into_iter().map(row).collect();
    let clusters = preheat::clusters_for(&state, &caller, &name).await?;
    let managed_tenant = match preheat::tenant_of(&state, &name).await {
        Ok(tenant) => access::tenant::<Manage>(&state, &caller, &tenant, None).await.ok().map(|_| tenant),
        Err(_) => None,
    };
    let page = RepositoryPage {
        chrome: who.chrome(&state, "tenants").await,
        namespace: name.namespace().to_owned(),
        name: name.as_str().to_owned(),
        tags,
        may_delete: listed.may_delete,
        clusters,
        managed_tenant,
        clients: Clients::of(&state),
        acceleration: state.config.acceleration_host(),
    };
    Ok(render(&page))
}

/// The delete-a-tag form.
#[derive(Deserialize)]
pub struct DeleteTag {
    #[serde(default)]
    repository: String,
    #[serde(default)]
    tag: String,
}

/// `POST /console/repository/delete-tag`: after a confirmation, removes a tag; its manifest stays until collected.
pub async fn delete_tag(State(state): State<AppState>, posted: Posted<DeleteTag>) -> Response {
    let Posted { who, form, kept, confirmed } = posted;
    let back = format!("/console/repository?name={}", segment(&form.repository));
    if !confirmed {
        let question = Confirm {
            title: format!("Delete tag {} of {}?", form.tag, form.repository),
            consequence: format!(
                "{}:{} stops resolving at once: pulls of it fail until the tag is pushed again. The manifest stays, \
                 and pulls by its digest still work.",
                form.repository, form.tag
            ),
            button: format!("Delete tag {}", form.tag),
            cancel: back,
        };
        return confirm(&state, &who, kept, question).await;
    }
    let deleted = async {
        let name = parse_name(&form.repository)?;
        repositories::delete_tag(&state, &who.caller(), &name, &form.tag, "console").await
    };
    match deleted.await {
        Ok(()) => {
            done(&state, &who, &back, notice(format!("Tag {} deleted from {}.", form.tag, form.repository))).await
        }
        Err(e) => failed(&state, &who, &back, kept, e.into()).await,
    }
}

/// The preheat form of a tag.
#[derive(Deserialize)]
pub struct PreheatForm {
    #[serde(default)]
    repository: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    percent: String,
}

/// `POST /console/repository/preheat`: starts a preheat job and shows it.
pub async fn preheat(State(state): State<AppState>, posted: Posted<PreheatForm>) -> Response {
    let Posted { who, form, kept, .. } = posted;
    let back = format!("/console/repository?name={}", segment(&form.repository));
    match start_preheat(&state, &who, &form).await {
        Ok((tenant, job)) => {
            let to = format!(
                "/console/tenants/{}/clusters/{}/preheat/{}",
                segment(&tenant),
                segment(&form.cluster),
                segment(&job)
            );
            let text = format!("Preheat of {}:{} into cluster {} started.", form.repository, form.tag, form.cluster);
            done(&state, &who, &to, notice(text)).await
        }
        Err(e) => failed(&state, &who, &back, kept, e.into()).await,
    }
}

/// Starts the job under the same rules as the management API's; (tenant, job id).
async fn start_preheat(state: &AppState, who: &SignedIn, form: &PreheatForm) -> Result<(String, String), Error> {
    let name = parse_name(&form.repository)?;
    let percent = form.percent.trim().parse::<u8>().map_err(|_| {
        Error::invalid(
            Thing::Field,
            format!("{:?} is not a percentage: give a whole number from 1 to 100", form.percent),
        )
    })?;
    // Refused in the same words whether the namespace exists or not, naming no tenant.
    let attempt = |tenant: &str| preheat::starting(tenant, &form.cluster);
    let access = access::tenant_of_namespace::<Manage>(state, &who.caller(), name.namespace(), attempt).await?;
    let tenant = access.tenant().name.clone();
    let cluster = clusters::find(state, &access, &form.cluster).await?;
    let percent = Percent::new(percent)?;
    let job = preheat::start(state, &access, &cluster, &name, &form.tag, percent, PreheatTrigger::Console).await?;
    Ok((tenant, job.id))
}
