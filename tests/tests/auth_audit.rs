//! The audit log of a real `damselfly-registry`: logins, tokens, pushes,
//! deletes and role changes, each with its actor, object, tenant and
//! outcome, on both metadata backends.
//!
//! Tenants, namespaces, users, roles and robots are made through the
//! management API (`/api/v1/…`) as the system administrator `admin`; the
//! HTTP client and those calls are `damselfly_tests::http`'s.
//!
//! Each scenario is an `async fn(Backend)`; `on_both_backends!` turns it into
//! `<scenario>::sqlite` and `<scenario>::postgres`.

use damselfly_tests::http::{
    audit, create_namespace, create_robot, create_tenant, create_user, grant_role, management_api_is_up, summary, Cred,
    Http,
};
use damselfly_tests::image::push_image;
use damselfly_tests::{on_both_backends, Backend, Registry};
use reqwest::Method;
use serde_json::{json, Value};

on_both_backends!(the_audit_log_records_logins_tokens_pushes_deletes_and_role_changes,);

fn event(
    actor: &str,
    action: &str,
    object: &str,
    tenant: Option<&str>,
    outcome: &str,
) -> (String, String, String, Option<String>, String) {
    (actor.to_owned(), action.to_owned(), object.to_owned(), tenant.map(str::to_owned), outcome.to_owned())
}

async fn the_audit_log_records_logins_tokens_pushes_deletes_and_role_changes(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    create_tenant(&http, "acme").await;
    create_namespace(&http, "acme", "team", false).await;
    create_user(&http, "dora", "dora-password").await;
    grant_role(&http, "acme", "user", "dora", None, "developer").await;
    grant_role(&http, "acme", "user", "dora", Some("team"), "admin").await;
    let robot = create_robot(&http, "acme", "ci", json!([{ "namespace": "team", "role": "developer" }])).await;
    let dora = Cred::basic("dora", "dora-password");

    let (token, _) = http.token(&dora, &["repository:team/app:pull,push"]).await;
    let bad = http.token_reply(&Cred::basic("dora", "wrong-password"), &[]).await;
    assert_eq!(bad.status, 401);
    let image = push_image(&http, &Cred::Bearer(token), "team/app", "audited").await;
    let (robot_token, _) = http.token(&robot, &["repository:team/app:pull"]).await;
    http.get(&Cred::Bearer(robot_token), &image.manifest_path("v1")).await.expect(200);
    let delete = |path: String| http.send(http.request(&dora, Method::DELETE, &path));
    delete(image.manifest_path("v1")).await.expect(202);
    delete(image.manifest_path(&image.referrer)).await.expect(202);
    delete(image.blob_path(&image.layer.digest)).await.expect(202);
    http.admin_api(Method::DELETE, "/api/v1/tenants/acme/members?kind=user&name=dora&namespace=team", Value::Null)
        .await;
    http.admin_api(Method::DELETE, "/api/v1/tenants/acme/robots/ci", Value::Null).await;
    http.admin_api(Method::PUT, "/api/v1/users/dora/password", json!({ "password": "dora-password-2" })).await;

    let tenant = Some("acme");
    let digest_object = |d: &str| format!("team/app@{d}");
    assert_eq!(
        summary(&audit(&http, &[("tenant", "acme")]).await),
        [
            event("admin", "tenant.create", "tenant/acme", tenant, "success"),
            event("admin", "namespace.create", "namespace/team", tenant, "success"),
            event("admin", "role.grant", "user/dora", tenant, "success"),
            event("admin", "role.grant", "user/dora", tenant, "success"),
            event("admin", "robot.create", "robot/robot$acme+ci", tenant, "success"),
            event("dora", "manifest.push", "team/app:v1", tenant, "success"),
            event("dora", "manifest.push", &digest_object(&image.referrer), tenant, "success"),
            event("dora", "tag.delete", "team/app:v1", tenant, "success"),
            event("dora", "manifest.delete", &digest_object(&image.referrer), tenant, "success"),
            event("dora", "blob.delete", &digest_object(&image.layer.digest), tenant, "success"),
            event("admin", "role.revoke", "user/dora", tenant, "success"),
            event("admin", "robot.revoke", "robot/robot$acme+ci", tenant, "success"),
        ]
    );
    let logins = summary(&audit(&http, &[("actor", "dora"), ("action", "login")]).await);
    assert_eq!(
        logins,
        [event("dora", "login", "dora", None, "success"), event("dora", "login", "dora", None, "denied")]
    );
    let tokens = audit(&http, &[("action", "token.issue")]).await;
    assert_eq!(
        summary(&tokens).into_iter().map(|(actor, action, ..)| (actor, action)).collect::<Vec<_>>(),
        [("dora".to_owned(), "token.issue".to_owned()), ("robot$acme+ci".to_owned(), "token.issue".to_owned())]
    );
    assert_eq!(
        tokens[0]["detail"],
        json!({ "requested": ["repository:team/app:pull,push"], "granted": ["repository:team/app:pull,push"] })
    );
    assert_eq!(
        summary(&audit(&http, &[("action", "user.password")]).await),
        [event("admin", "user.password", "user/dora", None, "success")]
    );
    assert_eq!(
        summary(&audit(&http, &[("action", "user.create")]).await),
        [event("admin", "user.create", "user/dora", None, "success")]
    );
}
