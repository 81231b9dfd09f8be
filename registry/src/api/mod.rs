//! The JSON management API under `/api/v1/`: tenants, namespaces, members,
//! robot accounts, users, the audit log, signing keys, garbage collection,
//! quotas and lifecycle policies. Its OpenAPI
//! document is generated from these handlers and served at
//! `/api/v1/openapi.json`.
//!
//! Every endpoint but the document takes Basic credentials (a user, or a
//! robot as `robot$<tenant>+<name>` with its token) or a Bearer token from
//! `/auth/token` (`caller.rs`). The handlers are a thin face over
//! `crate::services`, which decide who may do what; `error.rs` turns the
//! services' errors into this API's answers.

mod audit;
mod caller;
mod clusters;
pub mod error;
mod gc;
mod keys;
mod links;
mod members;
mod namespaces;
mod preheat;
mod robots;
mod storage;
mod tenants;
mod users;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::state::AppState;
use error::{ApiError, ApiResult};
use links::Links;

/// Every route of the management API, at its full path.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/tenants", get(tenants::list).post(tenants::create))
        .route("/api/v1/tenants/{tenant}", get(tenants::show))
        .route("/api/v1/tenants/{tenant}/quota", get(storage::tenant_quota).put(storage::set_tenant_quota))
        .route("/api/v1/tenants/{tenant}/namespaces", get(namespaces::list).post(namespaces::create))
        .route("/api/v1/namespaces/{namespace}", get(namespaces::show).patch(namespaces::update))
        .route("/api/v1/namespaces/{namespace}/quota", get(storage::namespace_quota).put(storage::set_namespace_quota))
        .route("/api/v1/namespaces/{namespace}/lifecycle", get(storage::lifecycle).put(storage::set_lifecycle))
        .route("/api/v1/namespaces/{namespace}/lifecycle/preview", get(storage::preview))
        .route("/api/v1/tenants/{tenant}/members", get(members::list).put(members::grant).delete(members::revoke))
        .route("/api/v1/tenants/{tenant}/robots", get(robots::list).post(robots::create))
        .route("/api/v1/tenants/{tenant}/robots/{robot}", axum::routing::delete(robots::revoke))
        .route("/api/v1/tenants/{tenant}/robots/{robot}/rotate", post(robots::rotate))
        .route("/api/v1/tenants/{tenant}/clusters", get(clusters::list).post(clusters::create))
        .route("/api/v1/tenants/{tenant}/clusters/{cluster}", axum::routing::delete(clusters::delete))
        .route("/api/v1/tenants/{tenant}/clusters/{cluster}/token", post(clusters::reissue_token))
        .route("/api/v1/tenants/{tenant}/clusters/{cluster}/preheat", get(preheat::list).post(preheat::start))
        .route("/api/v1/tenants/{tenant}/clusters/{cluster}/preheat/{job}", get(preheat::show))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route("/api/v1/users/{username}/password", put(users::set_password))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/signing-keys/rotate", post(keys::rotate))
        .route("/api/v1/gc", post(gc::start))
        .route("/api/v1/gc/runs", get(gc::list))
        .route("/api/v1/gc/runs/{id}", get(gc::show))
        .route("/api/v1", get(unknown_endpoint))
        .route("/api/v1/", get(unknown_endpoint))
        .route("/api/v1/{*rest}", axum::routing::any(unknown_endpoint))
}

/// The OpenAPI 3 description of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Damselfly management API",
        description = "Tenants, namespaces, members, robot accounts, users, the audit log, token signing keys, \
                       garbage collection, quotas and lifecycle policies of a Damselfly registry. Authenticate with Basic credentials (a user, or \
                       `robot$<tenant>+<name>` with its token) or a Bearer token from `/auth/token`."
    ),
    paths(
        openapi,
        tenants::list,
        tenants::create,
        tenants::show,
        namespaces::list,
        namespaces::create,
        namespaces::show,
        namespaces::update,
        members::list,
        members::grant,
        members::revoke,
        robots::list,
        robots::create,
        robots::rotate,
        robots::revoke,
        clusters::list,
        clusters::create,
        clusters::reissue_token,
        clusters::delete,
        preheat::list,
        preheat::start,
        preheat::show,
        users::list,
        users::create,
        users::set_password,
        audit::list,
        keys::rotate,
        gc::start,
        gc::list,
        gc::show,
        storage::tenant_quota,
        storage::set_tenant_quota,
        storage::namespace_quota,
        storage::set_namespace_quota,
        storage::lifecycle,
        storage::set_lifecycle,
        storage::preview,
    ),
    components(schemas(error::ErrorBody, error::ErrorEntry)),
    modifiers(&SecuritySchemes, &LoginThrottle, &Links),
    security(("basic" = []), ("bearer" = [])),
    tags(
        (name = "tenants", description = "Tenants own namespaces, members and robots."),
        (name = "namespaces", description = "A namespace is the first path component of its repositories."),
        (name = "members", description = "Roles held on a tenant or one of its namespaces."),
        (name = "robots", description = "Robot accounts of a tenant, for CI and machines."),
        (name = "clusters", description = "Clusters whose node agents pull through the P2P network."),
        (name = "users", description = "People who log in."),
        (name = "audit", description = "What was done, by whom, from where."),
        (name = "signing-keys", description = "The keys that sign access tokens."),
        (name = "gc", description = "Garbage collection: runs that delete what nothing references, beside pushes."),
        (name = "storage", description = "Quotas, storage use, and namespaces' retention and immutability rules."),
        (name = "meta", description = "This document."),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::builder().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// Every operation that takes credentials may answer `429`: Basic
/// credentials are checked, and failed logins throttled, on each of them.
struct LoginThrottle;

impl Modify for LoginThrottle {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{HeaderBuilder, ObjectBuilder, Ref, ResponseBuilder};
        let throttled = ResponseBuilder::new()
            .description("Too many failed logins from this name or address; wait the seconds Retry-After says")
            .header(
                "Retry-After",
                HeaderBuilder::new().schema(ObjectBuilder::new().schema_type(utoipa::openapi::Type::Integer)).build(),
            )
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                // Only the document itself is public (`security: [{}]`).
                let public = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                if !public {
                    operation.responses.responses.insert("429".to_owned(), throttled.clone().into());
                }
            }
        }
    }
}

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "getOpenApi",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json"))
)]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn unknown_endpoint() -> ApiError {
    ApiError::NotFound("no such management endpoint; the endpoints are listed in /api/v1/openapi.json".to_owned())
}

/// A JSON request body, an object; a body that does not parse is a `400 INVALID_REQUEST`.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> ApiResult<Self> {
        let Json(value) = Json::<serde_json::Value>::from_request(request, state).await?;
        // serde reads a struct from a JSON array as well, by position: every
        // body of this API is an object, and an array is refused as such.
        if !value.is_object() {
            return Err(ApiError::InvalidRequest(
                "the body must be a JSON object; see /api/v1/openapi.json for its fields".to_owned(),
            ));
        }
        serde_json::from_value(value).map(Body).map_err(|e| {
            ApiError::InvalidRequest(format!(
                "Failed to deserialize the JSON body into the target type: {e}; see /api/v1/openapi.json for the fields"
            ))
        })
    }
}

/// Query parameters; ones that do not parse are a `400 INVALID_REQUEST`.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Params(value))
    }
}

/// Path parameters; ones that do not decode are a `400 INVALID_REQUEST`.
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(PathParams(value))
    }
}
