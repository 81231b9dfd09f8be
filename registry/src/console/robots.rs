//! A tenant's robot accounts: list, create with scopes and an expiry (the
//! token is shown once), rotate a token, revoke. Tenant admins and owners
//! only, as in the API.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::{
    confirm, finish, notice, render, role_name, segment, utc, Chrome, Clients, Confirm, ConsoleResult, Flash, Kept,
    Posted, Secret, SignedIn,
};
use crate::metadata::Role;
use crate::services::access::{self, Manage};
use crate::services::names::Name;
use crate::services::robots::{self, NewRobot, Robot, Scope, MAX_LIFETIME_SECS};
use crate::services::{namespaces, Error, Thing};
use crate::state::AppState;

/// The longest expiry the form offers, in days: the rules' ten years.
const MAX_DAYS: i64 = MAX_LIFETIME_SECS / 86_400;

#[derive(Template)]
#[template(path = "robots.html")]
struct RobotsPage {
    chrome: Chrome,
    tenant: String,
    robots: Vec<Robot>,
    /// The tenant's namespaces, which a scope may be limited to.
    namespaces: Vec<String>,
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

    /// A namespace a scope named that is not among the tenant's (typed by
    /// hand, or deleted since), kept so the form shows what was sent.
    fn stray_namespace(&self, i: impl std::fmt::Display) -> Option<&str> {
        let kept = self.kept_scope(i, "namespace");
        (!kept.is_empty() && !self.namespaces.iter().any(|n| n == kept)).then_some(kept)
    }

    fn max_days(&self) -> i64 {
        MAX_DAYS
    }

    fn action(&self, r: &Robot, what: &str) -> String {
        format!("{}/robots/{}/{what}", self.base(), segment(&r.name))
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
    let namespaces = namespaces::visible(&state, &access).await?.into_iter().map(|n| n.name.clone()).collect();
    Ok(render(&RobotsPage { chrome: who.chrome(&state, "tenants").await, tenant, robots, namespaces }))
}

/// The new-robot form: up to three scopes; a scope with role `none` is left out.
#[derive(Deserialize)]
pub struct RobotForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    /// Days until it stops working.
    #[serde(default)]
    expires_in_days: String,
    /// Ticked for a robot that never expires.
    #[serde(default)]
    never_expires: bool,
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

/// When the robot expires: a number of days, or never, chosen explicitly.
fn expiry(form: &RobotForm) -> Result<Option<i64>, Error> {
    let days = form.expires_in_days.trim();
    let choose = |what: &str| {
        Error::invalid(
            Thing::Field,
            format!("{what}: give the days until the robot expires (1 to {MAX_DAYS}), or tick Never expires"),
        )
    };
    match (days, form.never_expires) {
        (_, true) => Ok(None),
        ("", false) => Err(choose("no expiry was chosen")),
        (days, false) => match days.parse::<i64>() {
            Ok(d) if (1..=MAX_DAYS).contains(&d) => Ok(Some(d * 86_400)),
            _ => Err(choose(&format!("{days:?} is not a number of days from 1 to {MAX_DAYS}"))),
        },
    }
}

fn new_robot(form: &RobotForm) -> Result<NewRobot, Error> {
    let expires_in_secs = expiry(form)?;
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

/// The token of `login`, shown once, with the commands that log in with it.
fn token_shown(state: &AppState, login: &str, token: String) -> Secret {
    let clients = Clients::of(state);
    Secret {
        label: format!("Token of {login}"),
        value: token,
        command_label: "Log in with it: the first two ask for the password (paste the token); in a script, put the \
                        token in $TOKEN and use the third"
            .to_owned(),
        command: Some(clients.login_commands(login)),
        note: clients.docker_note(),
    }
}

/// `POST /console/tenants/{tenant}/robots`: creates a robot and shows its token once.
pub async fn create(State(state): State<AppState>, Path(tenant): Path<String>, posted: Posted<RobotForm>) -> Response {
    let Posted { who, form, kept, .. } = posted;
    let back = format!("/console/tenants/{}/robots", segment(&tenant));
    let name = form.name.trim();
    let created = async {
        let access =
            access::tenant::<Manage>(&state, &who.caller(), &tenant, Some(robots::creating(&tenant, name))).await?;
        robots::create(&state, &access, &Name::robot(name)?, new_robot(&form)?).await
    };
    let outcome = created.await.map(|created| Flash {
        notice: Some(format!("Robot {} created.", created.robot.login)),
        secret: Some(token_shown(&state, &created.robot.login, created.token)),
        ..Flash::default()
    });
    finish(&state, &who, &back, kept, outcome).await
}

/// `POST /console/tenants/{tenant}/robots/{robot}/rotate`: after a
/// confirmation, a new token, shown once; the old one stops working.
pub async fn rotate(
    State(state): State<AppState>,
    Path((tenant, robot)): Path<(String, String)>,
    posted: Posted<super::session::NoFields>,
) -> Response {
    let Posted { who, kept, confirmed, .. } = posted;
    let back = format!("/console/tenants/{}/robots", segment(&tenant));
    if !confirmed {
        let question = Confirm {
            title: format!("Rotate the token of robot {robot}?"),
            consequence: format!(
                "A new token is made and shown once. The current token, and every access token issued with it, \
                 stop working at once: whatever logs in as robot${tenant}+{robot} fails until it is given the new \
                 one."
            ),
            button: "Rotate token".to_owned(),
            cancel: back,
        };
        return confirm(&state, &who, kept, question).await;
    }
    let rotated = async {
        let attempt = robots::rotating(&tenant, &robot);
        let access = access::tenant::<Manage>(&state, &who.caller(), &tenant, Some(attempt)).await?;
        robots::rotate(&state, &access, &robot).await
    };
    let outcome = rotated.await.map(|(login, token)| Flash {
        notice: Some(format!("Robot {login} has a new token; the old one no longer works.")),
        secret: Some(token_shown(&state, &login, token)),
        ..Flash::default()
    });
    finish(&state, &who, &back, kept, outcome).await
}

/// `POST /console/tenants/{tenant}/robots/{robot}/revoke`: after a confirmation, revokes for good.
pub async fn revoke(
    State(state): State<AppState>,
    Path((tenant, robot)): Path<(String, String)>,
    posted: Posted<super::session::NoFields>,
) -> Response {
    let Posted { who, kept, confirmed, .. } = posted;
    let back = format!("/console/tenants/{}/robots", segment(&tenant));
    if !confirmed {
        let question = Confirm {
            title: format!("Revoke robot {robot}?"),
            consequence: format!(
                "robot${tenant}+{robot} stops working at once, with every token issued to it, for good: a revoked \
                 robot cannot be restored, and its name stays taken."
            ),
            button: "Revoke".to_owned(),
            cancel: back,
        };
        return confirm(&state, &who, kept, question).await;
    }
    let revoked = async {
        let access =
            access::tenant::<Manage>(&state, &who.caller(), &tenant, Some(robots::revoking(&tenant, &robot))).await?;
        robots::revoke(&state, &access, &robot).await
    };
    let outcome = revoked.await.map(|()| notice(format!("Robot {robot} revoked; its token no longer works.")));
    finish(&state, &who, &back, kept, outcome).await
}
