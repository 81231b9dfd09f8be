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

use super::{done, failed, human_bytes, notice, render, segment, utc, Chrome, ConsoleResult, Kept, Posted, SignedIn};
use crate::metadata::TagDetail;
use crate::services::access::{self, Manage};
use crate::services::preheat::{self, Percent};
use crate::services::{clusters, repositories, Error, Thing};
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

    /// The preheat form of tag `tag`, if it came back with an error.
    fn kept_preheat(&self, tag: &str) -> Kept<'_> {
        self.chrome.kept("/console/repository/preheat").row("tag", tag)
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
    let caller = who.caller();
    let listed = repositories::tags(&state, &caller, &name, MAX_LISTED).await?;
    let tags = listed.tags.into_iter().map(|t| row(&state, name.as_str(), t)).collect();
    let clusters = preheat::clusters_for(&state, &caller, &name).await?;
    let page = RepositoryPage {
        chrome: who.chrome(&state, "tenants").await,
        namespace: name.namespace().to_owned(),
        name: name.as_str().to_owned(),
        tags,
        may_delete: listed.may_delete,
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
    let Posted { who, form, kept } = posted;
    let back = format!("/console/repository?name={}", segment(&form.repository));
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
    let Posted { who, form, kept } = posted;
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
    let tenant = preheat::tenant_of(state, &name).await?;
    let attempt = preheat::starting(&tenant, &form.cluster);
    let access = access::tenant::<Manage>(state, &who.caller(), &tenant, Some(attempt)).await?;
    let cluster = clusters::find(state, &access, &form.cluster).await?;
    let job = preheat::start(state, &access, &cluster, &name, &form.tag, Percent::new(percent)?).await?;
    Ok((tenant, job.id))
}
