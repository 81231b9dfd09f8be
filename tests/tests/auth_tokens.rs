//! The token protocol of a real `damselfly-registry` (`/auth/token`,
//! `/auth/jwks.json`): ES256 tokens with the standard claims, grants that are
//! the intersection of what was asked and what the caller holds, anonymous
//! tokens, and the OAuth2 password and refresh-token grants, on both
//! metadata backends.
//!
//! Tenants, namespaces, users, roles and robots are made through the
//! management API (`/api/v1/…`) as the system administrator `admin`; the
//! HTTP client and those calls are `damselfly_tests::http`'s.
//!
//! Each scenario is an `async fn(Backend)`; `on_both_backends!` turns it into
//! `<scenario>::sqlite` and `<scenario>::postgres`.

use damselfly_tests::http::{
    challenge, create_namespace, create_robot, create_tenant, create_user, grant_role, management_api_is_up, Cred,
    Http, SERVICE,
};
use damselfly_tests::image::{push_blob, push_image, Blob};
use damselfly_tests::jwt::{jwt, unix_now};
use damselfly_tests::{on_both_backends, Backend, Registry, ADMIN_PASSWORD, ADMIN_USER};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Method;
use serde_json::{json, Value};

on_both_backends!(
    a_token_is_an_es256_jwt_with_the_standard_claims_that_verifies_against_the_jwks,
    a_token_grants_only_the_asked_actions_the_principal_holds,
    anonymous_tokens_grant_pull_on_public_namespaces_and_nothing_else,
    oauth2_password_and_refresh_token_grants_issue_tokens,
);

async fn a_token_is_an_es256_jwt_with_the_standard_claims_that_verifies_against_the_jwks(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    let before = unix_now();

    let reply = http.token_reply(&Cred::admin(), &["repository:team/app:pull,push"]).await.expect(200);

    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    let token = body["token"].as_str().expect("token").to_owned();
    assert_eq!(body["access_token"], token.as_str(), "access_token is the same token, for OAuth2 clients");
    assert_eq!((&body["expires_in"], &body["scope"]), (&json!(300), &json!("repository:team/app:pull,push")));
    let mut fields: Vec<&str> = body.as_object().expect("object").keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["access_token", "expires_in", "scope", "token"], "no refresh token unless asked for");
    let (header, claims) = jwt(&token);
    assert_eq!((&header["alg"], &header["typ"]), (&json!("ES256"), &json!("JWT")));
    let kid = header["kid"].as_str().expect("a kid in the header").to_owned();
    assert_eq!(
        (&claims["iss"], &claims["sub"], &claims["aud"]),
        (&json!(reg.url), &json!("admin"), &json!(SERVICE)),
        "{claims}"
    );
    let iat = claims["iat"].as_i64().expect("iat");
    assert!((before..=unix_now()).contains(&iat), "iat {iat} is now");
    assert_eq!((claims["nbf"].as_i64(), claims["exp"].as_i64()), (Some(iat), Some(iat + 300)));
    assert_eq!(claims["jti"].as_str().map(str::len), Some(36), "a UUID jti: {claims}");
    assert_eq!(claims["access"], json!([{ "type": "repository", "name": "team/app", "actions": ["pull", "push"] }]));
    let (_, second) = jwt(&http.token(&Cred::admin(), &["repository:team/app:pull"]).await.0);
    assert_ne!(second["jti"], claims["jti"], "every token has its own jti");

    // Verifiable offline with nothing but the JWKS.
    let jwks = http.get(&Cred::Anonymous, "/auth/jwks.json").await.expect(200).json();
    let keys = jwks["keys"].as_array().expect("keys");
    let jwk = keys.iter().find(|k| k["kid"] == kid.as_str()).unwrap_or_else(|| panic!("kid {kid} in {jwks}"));
    assert_eq!(
        [&jwk["kty"], &jwk["crv"], &jwk["alg"], &jwk["use"]],
        [&json!("EC"), &json!("P-256"), &json!("ES256"), &json!("sig")]
    );
    let key = DecodingKey::from_ec_components(jwk["x"].as_str().expect("x"), jwk["y"].as_str().expect("y"))
        .expect("a P-256 public key");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[SERVICE]);
    validation.set_issuer(&[reg.url.as_str()]);
    let verified = jsonwebtoken::decode::<Value>(&token, &key, &validation).expect("the token verifies with the JWKS");
    assert_eq!(verified.claims, claims);
    assert_eq!(http.get(&Cred::Anonymous, "/.well-known/jwks.json").await.expect(200).json(), jwks);

    // And the registry takes it: the push creates the namespace, the pull reads it back.
    let blob = Blob::new(b"pushed with a token".to_vec());
    push_blob(&http, &Cred::Bearer(token.clone()), "team/app", &blob).await;
    let pulled = http.get(&Cred::Bearer(token), &format!("/v2/team/app/blobs/{}", blob.digest)).await.expect(200);
    assert_eq!(pulled.body, blob.bytes);
    let namespace = http.admin_api(Method::GET, "/api/v1/namespaces/team", Value::Null).await;
    assert_eq!((&namespace["tenant"], &namespace["public"]), (&json!("default"), &json!(false)), "{namespace}");
}

async fn a_token_grants_only_the_asked_actions_the_principal_holds(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    create_tenant(&http, "acme").await;
    create_namespace(&http, "acme", "shop", false).await;
    create_namespace(&http, "acme", "lab", false).await;
    create_user(&http, "vic", "vic-password-1").await;
    grant_role(&http, "acme", "user", "vic", Some("shop"), "viewer").await;
    create_user(&http, "dev", "dev-password-1").await;
    grant_role(&http, "acme", "user", "dev", None, "developer").await;
    let shop = push_image(&http, &Cred::admin(), "shop/app", "shop").await;
    push_image(&http, &Cred::admin(), "lab/app", "lab").await;
    let vic = Cred::basic("vic", "vic-password-1");
    let dev = Cred::basic("dev", "dev-password-1");

    // A viewer asking to push gets pull, and no error.
    let (token, scope) = http.token(&vic, &["repository:shop/app:pull,push"]).await;
    assert_eq!(scope, "repository:shop/app:pull");
    assert_eq!(jwt(&token).1["access"], json!([{ "type": "repository", "name": "shop/app", "actions": ["pull"] }]));
    let viewer = Cred::Bearer(token);
    assert_eq!(http.get(&viewer, &shop.manifest_path("v1")).await.expect(200).text(), shop.manifest);
    let refused = http.send(http.request(&viewer, Method::POST, "/v2/shop/app/blobs/uploads/")).await;
    assert_eq!(refused.status_and_code(), (401, Some("UNAUTHORIZED".into())));
    assert_eq!(
        refused.header("www-authenticate"),
        Some(challenge(&reg, Some("repository:shop/app:pull,push"), Some("insufficient_scope")).as_str())
    );
    // Its namespace role reaches no other namespace of the tenant.
    let (_, scope) = http.token(&vic, &["repository:lab/app:pull", "repository:shop/app:pull"]).await;
    assert_eq!(scope, "repository:shop/app:pull");

    // A developer gets pull and push but not delete; `*` is spelled out; a
    // repository that does not exist yet takes an admin to create.
    let (token, scope) = http
        .token(&dev, &["repository:shop/app:pull,push,delete", "repository:lab/app:*", "repository:lab/new:push"])
        .await;
    assert_eq!(scope, "repository:shop/app:pull,push repository:lab/app:pull,push");
    assert_eq!(
        jwt(&token).1["access"],
        json!([
            { "type": "repository", "name": "shop/app", "actions": ["pull", "push"] },
            { "type": "repository", "name": "lab/app", "actions": ["pull", "push"] },
        ])
    );
    let developer = Cred::Bearer(token);
    let refused = http.send(http.request(&developer, Method::DELETE, &shop.manifest_path("v1"))).await;
    assert_eq!(refused.status_and_code(), (401, Some("UNAUTHORIZED".into())));
    assert_eq!(
        refused.header("www-authenticate"),
        Some(challenge(&reg, Some("repository:shop/app:delete"), Some("insufficient_scope")).as_str())
    );
    // The same refusals with Basic credentials are 403 DENIED: the caller is known, the action is not theirs.
    let by_basic = http.send(http.request(&vic, Method::POST, "/v2/shop/app/blobs/uploads/")).await;
    assert_eq!(by_basic.status_and_code(), (403, Some("DENIED".into())));
    let by_basic = http.send(http.request(&dev, Method::DELETE, &shop.manifest_path("v1"))).await;
    assert_eq!(by_basic.status_and_code(), (403, Some("DENIED".into())));
    assert_eq!(http.get(&Cred::admin(), &shop.manifest_path("v1")).await.expect(200).text(), shop.manifest);

    // Scopes that name nothing grantable are left out, not errors.
    let (token, scope) =
        http.token(&dev, &["repository:Not/Valid:pull", "repository:app:pull", "nonsense", "registry:catalog:*"]).await;
    assert_eq!(scope, "registry:catalog:*");
    assert_eq!(jwt(&token).1["access"], json!([{ "type": "registry", "name": "catalog", "actions": ["*"] }]));

    // The service must be this registry's.
    let reply = http
        .send(
            http.request(&dev, Method::GET, "/auth/token")
                .query(&[("service", "elsewhere"), ("scope", "repository:shop/app:pull")]),
        )
        .await;
    assert_eq!(reply.status_and_code(), (400, Some("DENIED".into())));

    // A robot scoped to one namespace gets nothing in the tenant's others.
    let robot = create_robot(&http, "acme", "shop-bot", json!([{ "namespace": "shop", "role": "developer" }])).await;
    let (_, scope) = http.token(&robot, &["repository:shop/app:pull,push", "repository:lab/app:pull"]).await;
    assert_eq!(scope, "repository:shop/app:pull,push");
    let by_basic = http.get(&robot, "/v2/lab/app/tags/list").await;
    assert_eq!(by_basic.status_and_code(), (403, Some("DENIED".into())));

    // A role taken away counts at once: for new tokens and for Basic credentials.
    http.admin_api(Method::DELETE, "/api/v1/tenants/acme/members?kind=user&name=vic&namespace=shop", Value::Null).await;
    let (_, scope) = http.token(&vic, &["repository:shop/app:pull"]).await;
    assert_eq!(scope, "");
    let by_basic = http.get(&vic, &shop.manifest_path("v1")).await;
    assert_eq!(by_basic.status_and_code(), (403, Some("DENIED".into())));
}

async fn anonymous_tokens_grant_pull_on_public_namespaces_and_nothing_else(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    management_api_is_up(&http).await;
    create_tenant(&http, "acme").await;
    create_namespace(&http, "acme", "open", true).await;
    create_namespace(&http, "acme", "closed", false).await;
    let open = push_image(&http, &Cred::admin(), "open/app", "open").await;
    let closed = push_image(&http, &Cred::admin(), "closed/app", "closed").await;

    let (token, scope) = http
        .token(
            &Cred::Anonymous,
            &["repository:open/app:pull,push,delete", "repository:closed/app:pull", "registry:catalog:*"],
        )
        .await;

    assert_eq!(scope, "repository:open/app:pull");
    let (_, claims) = jwt(&token);
    assert_eq!(
        (&claims["sub"], &claims["access"]),
        (&json!(""), &json!([{ "type": "repository", "name": "open/app", "actions": ["pull"] }]))
    );
    let anonymous = Cred::Bearer(token);
    assert_eq!(http.get(&anonymous, &open.manifest_path("v1")).await.expect(200).text(), open.manifest);
    assert_eq!(http.get(&anonymous, &open.blob_path(&open.layer.digest)).await.expect(200).body, open.layer.bytes);
    for (method, path, scope) in [
        (Method::GET, closed.manifest_path("v1"), "repository:closed/app:pull"),
        (Method::POST, "/v2/open/app/blobs/uploads/".to_owned(), "repository:open/app:pull,push"),
        (Method::DELETE, open.manifest_path("v1"), "repository:open/app:delete"),
    ] {
        let reply = http.send(http.request(&anonymous, method, &path)).await;
        assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())), "{path}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some(challenge(&reg, Some(scope), Some("insufficient_scope")).as_str())
        );
    }
    // An anonymous token is no login: the catalog stays closed.
    let reply = http.get(&anonymous, "/v2/_catalog").await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())));
    assert_eq!(http.get(&Cred::admin(), &closed.manifest_path("v1")).await.expect(200).text(), closed.manifest);
}

async fn oauth2_password_and_refresh_token_grants_issue_tokens(backend: Backend) {
    let reg = Registry::start(backend);
    let http = Http::new(&reg);
    let image = push_image(&http, &Cred::admin(), "team/app", "oauth").await;
    let scope = "repository:team/app:pull";

    let body = http
        .oauth(&[
            ("grant_type", "password"),
            ("username", ADMIN_USER),
            ("password", ADMIN_PASSWORD),
            ("service", SERVICE),
            ("scope", scope),
            ("client_id", "tests"),
            ("access_type", "offline"),
        ])
        .await
        .expect(200)
        .json();

    assert_eq!(
        (&body["token_type"], &body["expires_in"], &body["scope"]),
        (&json!("Bearer"), &json!(300), &json!(scope))
    );
    assert_eq!(body["token"], body["access_token"]);
    let access = body["access_token"].as_str().expect("access_token").to_owned();
    let refresh = body["refresh_token"].as_str().expect("refresh_token with access_type=offline").to_owned();
    let (_, claims) = jwt(&access);
    assert_eq!(
        (&claims["sub"], &claims["access"]),
        (&json!("admin"), &json!([{ "type": "repository", "name": "team/app", "actions": ["pull"] }]))
    );
    assert_eq!(http.get(&Cred::Bearer(access), &image.manifest_path("v1")).await.expect(200).text(), image.manifest);
    // A refresh token opens nothing by itself.
    let reply = http.get(&Cred::Bearer(refresh.clone()), &image.manifest_path("v1")).await;
    assert_eq!(reply.status_and_code(), (401, Some("UNAUTHORIZED".into())));
    assert_eq!(reply.header("www-authenticate"), Some(challenge(&reg, Some(scope), Some("invalid_token")).as_str()));

    let body = http
        .oauth(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", SERVICE),
            ("scope", "repository:team/app:pull,push"),
            ("client_id", "tests"),
        ])
        .await
        .expect(200)
        .json();
    assert_eq!(body["scope"], "repository:team/app:pull,push");
    assert_eq!(body.get("refresh_token"), None, "no new refresh token without access_type=offline");
    let (_, claims) = jwt(body["access_token"].as_str().expect("access_token"));
    assert_eq!(claims["sub"], "admin");
    let pushed = Blob::new(b"pushed after a refresh".to_vec());
    push_blob(&http, &Cred::Bearer(body["access_token"].as_str().expect("token").to_owned()), "team/app", &pushed)
        .await;

    // Refusals, in the OAuth2 shape for what only OAuth2 has.
    let wrong = http
        .oauth(&[("grant_type", "password"), ("username", ADMIN_USER), ("password", "wrong"), ("service", SERVICE)])
        .await;
    assert_eq!((wrong.status, wrong.json()["error"].clone()), (400, json!("invalid_grant")));
    let reply =
        http.oauth(&[("grant_type", "refresh_token"), ("refresh_token", "not.a.token"), ("service", SERVICE)]).await;
    assert_eq!((reply.status, reply.json()["error"].clone()), (400, json!("invalid_grant")));
    let access_as_refresh = http.token(&Cred::admin(), &[scope]).await.0;
    let reply = http.oauth(&[("grant_type", "refresh_token"), ("refresh_token", &access_as_refresh)]).await;
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (400, json!("invalid_grant")),
        "an access token is no refresh token"
    );
    let reply = http.oauth(&[("grant_type", "client_credentials")]).await;
    assert_eq!((reply.status, reply.json()["error"].clone()), (400, json!("unsupported_grant_type")));
    let reply = http.oauth(&[("grant_type", "password"), ("username", ADMIN_USER)]).await;
    assert_eq!((reply.status, reply.json()["error"].clone()), (400, json!("invalid_request")));

    // `docker login` asks the GET endpoint for a refresh token with offline_token=true.
    let query = [("service", SERVICE), ("client_id", "docker"), ("offline_token", "true")];
    let reply = http.send(http.request(&Cred::admin(), Method::GET, "/auth/token").query(&query)).await;
    let refresh = reply.expect(200).json()["refresh_token"].as_str().expect("refresh_token").to_owned();
    let body = http
        .oauth(&[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("service", SERVICE), ("scope", scope)])
        .await
        .expect(200)
        .json();
    assert_eq!(body["scope"], scope);
}
