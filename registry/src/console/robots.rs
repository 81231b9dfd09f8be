//! A tenant's robot accounts: list, create with scopes and an expiry (the
//! token is shown once), revoke. Tenant admins and owners only, as in the API.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::{
    done, failed, notice, render, role_name, segment, utc, Chrome, ConsoleResult, Flash, Kept, Posted, Secret, SignedIn,
};
use crate::metadata::Role;
use crate::services::access::{self, Manage};
use crate::services::names::Name;
use crate::services::robots::{self, NewRobot, Robot, Scope};
use crate::services::{Error, Thing};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "robots.html")]
struct RobotsPage {
    chrome: Chrome,
    tenant: String,
    robots: Vec<Robot>,
}

impl RobotsPage {
    fn base(&self) -> String {
        format!("/console/tenants/{}", segment(&self.tenant))
    }

    fn new_robot(&self) -> Kept<'_> {
        self.chrome.kept(&format!("{}/robots", self.base()))
    }

    /// What scope `i`'s `part` (`namespace` or `role`) held in a form that came back.
    fn kept_scope(&self, i: impl std::fmt::Display, part: &str) -> &str {
        self.new_robot().value(&format!("scope{i}_{part}"))
    }

    fn revoke_action(&self, r: &Robot) -> String {
        format!("{}/robots/{}/revoke", self.base(), segment(&r.name))
    }

    fn scopes(&self, r: &Robot) -> String {
        let list: Vec<String> = r
            .scopes
            .iter()
            .map(|s| {
                let on = s.namespace.clone().unwrap_or_else(|| "whole tenant".to_owned());
                format!("{} on {on}", role_name(s.role))
            })
            .collect();
        if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(", ")
        }
    }

    fn expires(&self, r: &Robot) -> String {
        r.expires_at.map_or_else(|| "never".to_owned(), utc)
    }

    fn state(&self, r: &Robot) -> String {
        match r.revoked_at {
            Some(at) => format!("revoked {}", utc(at)),
            None if r.expires_at.is_some_and(|e| e <= crate::metadata::now()) => "expired".to_owned(),
            None => "active".to_owned(),
        }
    }
}

/// `GET /console/tenants/{tenant}/robots`.
pub async fn list(State(state): State<AppState>, who: SignedIn, Path(tenant): Path<String>) -> ConsoleResult<Response> {
    let access = access::tenant::<Manage>(&state, &who.caller(), &tenant, None).await?;
    let robots = robots::list(&state, &access).await?;
    Ok(render(&RobotsPage { chrome: who.chrome(&state, "tenants").await, tenant, robots }))
}

/// The new-robot form: up to three scopes; a scope with role `none` is left out.
#[derive(Deserialize)]
pub struct RobotForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    /// Days until it stops working; empty for never.
    #[serde(default)]
    expires_in_days: String,
    #[serde(default)]
    scope1_namespace: String,
    #[serde(default)]
    scope1_role: String,
    #[serde(default)]
    scope2_namespace: String,
    #[serde(default)]
    scope2_role: String,
    #[serde(default)]
    scope3_namespace: String,
    #[serde(default)]
    scope3_role: String,
}

fn scope(namespace: &str, role: &str) -> Result<Option<Scope>, Error> {
    let role = match role {
        "" | "none" => return Ok(None),
        "viewer" => Role::Viewer,
        "developer" => Role::Developer,
        "admin" => Role::Admin,
        other => {
            return Err(Error::invalid(
                Thing::Role,
                format!("{other} is not a role a robot can hold; pick viewer, developer or admin"),
            ))
        }
    };
    let namespace = namespace.trim();
    Ok(Some(Scope { namespace: (!namespace.is_empty()).then(|| namespace.to_owned()), role }))
}

fn new_robot(form: &RobotForm) -> Result<NewRobot, Error> {
    let expires_in_secs = match form.expires_in_days.trim() {
        "" => None,
        days => match days.parse::<i64>() {
            Ok(d) if d > 0 => Some(d.saturating_mul(86_400)),
            _ => {
                return Err(Error::invalid(
                    Thing::Field,
                    "Expires in is a whole number of days (1 or more); leave it empty for never.",
                ))
            }
        },
    };
    let mut scopes = Vec::new();
    for (ns, role) in [
        (&form.scope1_namespace, &form.scope1_role),
        (&form.scope2_namespace, &form.scope2_role),
        (&form.scope3_namespace, &form.scope3_role),
    ] {
        scopes.extend(scope(ns, role)?);
    }
    Ok(NewRobot { description: form.description.trim().to_owned(), expires_in_secs, scopes })
}

/// `POST /console/tenants/{tenant}/robots`: creates a robot and shows its token once.
pub async fn create(State(state): State<AppState>, Path(tenant): Path<String>, posted: Posted<RobotForm>) -> Response {
    let Posted { who, form, kept } = posted;
    let back = format!("/console/tenants/{}/robots", segment(&tenant));
    let name = form.name.trim();
    let created = async {
        let new = new_robot(&form)?;
        let access =
            access::tenant::<Manage>(&state, &who.caller(), &tenant, Some(robots::creating(&tenant, name))).await?;
        robots::create(&state, &access, &Name::robot(name)?, new).await
    };
    match created.await {
        Ok(created) => {
            let login = created.robot.login.clone();
            let command =
                format!("docker login {} --username '{login}' --password-stdin", state.config.registry_host());
            let flash = Flash {
                notice: Some(format!("Robot {login} created.")),
                secret: Some(Secret {
                    label: format!("Token of {login}"),
                    value: created.token,
                    command_label: "Log in with it (paste the token when asked)".to_owned(),
                    command: Some(command),
                }),
                ..Flash::default()
            };
            done(&state, &who, &back, flash).await
        }
        Err(e) => failed(&state, &who, &back, kept, e.into()).await,
    }
}

/// `POST /console/tenants/{tenant}/robots/{robot}/revoke`: revokes for good.
pub async fn revoke(
    State(state): State<AppState>,
    Path((tenant, robot)): Path<(String, String)>,
    posted: Posted<super::session::NoFields>,
) -> Response {
    let Posted { who, kept, .. } = posted;
    let back = format!("/console/tenants/{}/robots", segment(&tenant));
    let revoked = async {
        let access =
            access::tenant::<Manage>(&state, &who.caller(), &tenant, Some(robots::revoking(&tenant, &robot))).await?;
        robots::revoke(&state, &access, &robot).await
    };
    match revoked.await {
        Ok(()) => done(&state, &who, &back, notice(format!("Robot {robot} revoked; its token no longer works."))).await,
        Err(e) => failed(&state, &who, &back, kept, e.into()).await,
    }
}
