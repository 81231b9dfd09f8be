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
use serde_json::{json, Value};

use super::{
    done, failed, human_bytes, notice, render, segment, utc, Chrome, ConsoleError, ConsoleResult, Posted, SignedIn,
};
use crate::api::access::{self, TenantNeed};
use crate::api::error::ApiError;
use crate::api::preheat::{self as api_preheat, NewPreheat};
use crate::api::{Body, PathParams};
use crate::metadata::TagDetail;
use crate::services::audit::{self, Event};
use crate::state::AppState;

/// Most tags a repository page lists.
const MAX_LISTED: i64 = 1000;

/// One tag as listed.
struct TagRow {
    name: String,
    digest: String,
    media_type: String,
    size: String,
    pushed: String,
    platforms: Vec<String>,
    /// An artifact's type (its `artifactType`, else a config media type that is not an image's).
    artifact_type: Option<String>,
    /// The titles of an artifact's files (`org.opencontainers.image.title` of its layers).
    files: Vec<String>,
    /// `<registry>/<repo>:<tag>` and `<acceleration>/<repo>:<tag>`.
    registry_ref: String,
    accelerated_ref: String,
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
}

impl RepositoryPage {
    fn namespace_link(&self) -> String {
        format!("/console/namespaces/{}", segment(&self.namespace))
    }
}

/// Which repository.
#[derive(Deserialize)]
pub struct Which {
    #[serde(default)]
    name: String,
}

fn denied(who: &SignedIn, name: &str) -> ConsoleError {
    // The same words whether the repository exists or not.
    ConsoleError::Api(ApiError::Denied(format!(
        "{} may not pull from {name}, or it does not exist; ask an admin of its namespace for a role",
        who.principal.actor()
    )))
}

fn parse_name(name: &str) -> ConsoleResult<RepositoryName> {
    name.parse().map_err(|e: damselfly_core::NameError| {
        ConsoleError::Api(ApiError::InvalidRequest(format!(
            "{name:?} is not a repository name ({e}); open it from its namespace's page"
        )))
    })
}

/// Sizes a manifest refers to: an image's config and layers, an index's manifests.
fn total_size(content: &Value) -> u64 {
    let sum = |key: &str| {
        content[key].as_array().map_or(0, |items| items.iter().filter_map(|d| d["size"].as_u64()).sum::<u64>())
    };
    content["config"]["size"].as_u64().unwrap_or(0) + sum("layers") + sum("manifests") + sum("blobs")
}

fn platforms(content: &Value) -> Vec<String> {
    let Some(manifests) = content["manifests"].as_array() else { return Vec::new() };
    manifests
        .iter()
        .filter_map(|m| {
            let p = &m["platform"];
            let os = p["os"].as_str()?;
            let arch = p["architecture"].as_str()?;
            Some(match p["variant"].as_str() {
                Some(v) => format!("{os}/{arch}/{v}"),
                None => format!("{os}/{arch}"),
            })
        })
        .collect()
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

fn row(state: &AppState, repo: &str, t: TagDetail) -> TagRow {
    let content: Value = serde_json::from_slice(&t.content).unwrap_or(Value::Null);
    let size = total_size(&content) + t.content.len() as u64;
    TagRow {
        registry_ref: format!("{}/{repo}:{}", state.config.registry_host(), t.name),
        accelerated_ref: format!("{}/{repo}:{}", state.config.acceleration_host(), t.name),
        platforms: platforms(&content),
        artifact_type: artifact_type(&content),
        files: files(&content),
        size: human_bytes(size),
        pushed: utc(t.pushed_at),
        name: t.name,
        digest: t.digest,
        media_type: t.media_type,
    }
}

/// `GET /console/repository?name=<repository>`: its tags and pull commands.
pub async fn show(State(state): State<AppState>, who: SignedIn, Query(which): Query<Which>) -> ConsoleResult<Response> {
    let name = parse_name(&which.name)?;
    let actions = state.auth.policy.repository_actions(&state.db, &who.principal, &name).await?;
    if !actions.pull {
        return Err(denied(&who, name.as_str()));
    }
    let Some(repo) = state.db.repositories().find(name.as_str()).await? else {
        return Err(ConsoleError::Api(ApiError::NotFound(format!(
            "repository {name} has nothing in it yet; push an image to it first"
        ))));
    };
    let tags = state.db.tags().details(repo, MAX_LISTED).await?;
    let tags = tags.into_iter().map(|t| row(&state, name.as_str(), t)).collect();
    let clusters = preheat_clusters(&state, &who, &name).await?;
    let page = RepositoryPage {
        chrome: who.chrome(&state, "tenants").await,
        namespace: name.namespace().to_owned(),
        name: name.as_str().to_owned(),
        tags,
        may_delete: actions.delete,
        clusters,
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

/// `POST /console/repository/delete-tag`: removes a tag; its manifest stays until collected.
pub async fn delete_tag(State(state): State<AppState>, posted: Posted<DeleteTag>) -> Response {
    let Posted { who, form } = posted;
    let back = format!("/console/repository?name={}", segment(&form.repository));
    match delete(&state, &who, &form).await {
        Ok(()) => {
            done(&state, &who, &back, notice(format!("Tag {} deleted from {}.", form.tag, form.repository))).await
        }
        Err(e) => failed(&state, &who, &back, e).await,
    }
}

async fn delete(state: &AppState, who: &SignedIn, form: &DeleteTag) -> ConsoleResult<()> {
    let name = parse_name(&form.repository)?;
    let object = format!("{name}:{}", form.tag);
    let ns = state.auth.policy.namespace(&state.db, name.namespace()).await?;
    let tenant = ns.map(|n| n.tenant_id);
    let record = |outcome: &'static str| {
        let object = object.clone();
        async move {
            let event = Event {
                actor: who.principal.actor(),
                action: "tag.delete",
                object: &object,
                tenant,
                source: &who.source,
                outcome,
                detail: Some(json!({ "via": "console" })),
            };
            audit::record(state, event).await;
        }
    };
    let actions = state.auth.policy.repository_actions(&state.db, &who.principal, &name).await?;
    if !actions.delete {
        record("denied").await;
        return Err(ConsoleError::Api(ApiError::Denied(format!(
            "deleting tags in {name} takes the admin or owner role on its namespace or tenant, which {} does not hold",
            who.principal.actor()
        ))));
    }
    let repo = state.db.repositories().find(name.as_str()).await?;
    let deleted = match repo {
        Some(repo) => state.db.tags().delete(repo, &form.tag).await?,
        None => false,
    };
    if !deleted {
        return Err(ConsoleError::Api(ApiError::NotFound(format!(
            "{name} has no tag {}; it may have been deleted already",
            form.tag
        ))));
    }
    record("success").await;
    Ok(())
}

/// The clusters of the repository's tenant, if the user administers that tenant; none otherwise.
async fn preheat_clusters(state: &AppState, who: &SignedIn, name: &RepositoryName) -> ConsoleResult<Vec<String>> {
    let Some(namespace) = state.db.tenancy().namespace(name.namespace()).await? else { return Ok(Vec::new()) };
    let admin = access::tenant(state, &who.caller(), &namespace.tenant, TenantNeed::Admin, None).await.is_ok();
    if !admin {
        return Ok(Vec::new());
    }
    let clusters = state.db.clusters().of_tenant(namespace.tenant_id).await?;
    Ok(clusters.into_iter().map(|c| c.name).collect())
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
    let Posted { who, form } = posted;
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
        Err(e) => failed(&state, &who, &back, e).await,
    }
}

/// Starts the job through the management API's rules; (tenant, job id).
async fn start_preheat(state: &AppState, who: &SignedIn, form: &PreheatForm) -> ConsoleResult<(String, String)> {
    let name = parse_name(&form.repository)?;
    let percent = form.percent.trim().parse::<u8>().map_err(|_| {
        ApiError::InvalidRequest(format!("{:?} is not a percentage: give a whole number from 1 to 100", form.percent))
    })?;
    let namespace = state
        .db
        .tenancy()
        .namespace(name.namespace())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("namespace {} does not exist", name.namespace())))?;
    let body = NewPreheat { repository: name.as_str().to_owned(), tag: form.tag.clone(), percent };
    let path = PathParams((namespace.tenant.clone(), form.cluster.clone()));
    let (_, axum::Json(job)) = api_preheat::start(State(state.clone()), who.caller(), path, Body(body)).await?;
    Ok((namespace.tenant, job.id))
}
