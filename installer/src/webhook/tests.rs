use super::*;

const REVIEW: &str = include_str!("pod-review.json");
const DIGEST_APP: &str = "team-a/app@sha256:0a2c7d6f8e1b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5";

fn rewriter() -> Rewriter {
    Rewriter {
        registry_host: "registry.example.com".into(),
        acceleration_host: "p2p.registry.example.com:65001".into(),
    }
}

fn pod() -> Value {
    let review: Value = serde_json::from_str(REVIEW).expect("fixture");
    parse_review(&review).expect("a Pod review").pod
}

#[test]
fn a_pod_review_is_read_with_its_uid_namespace_and_dry_run_flag() {
    let mut review: Value = serde_json::from_str(REVIEW).expect("fixture");
    let request = parse_review(&review).expect("review");
    assert_eq!(request.uid, "7f0b2891-916f-4ed6-b7cd-27bff1815a8c");
    assert_eq!(request.namespace, "shop");
    assert!(!request.dry_run);
    review["request"]["dryRun"] = json!(true);
    assert!(parse_review(&review).expect("review").dry_run);
    review["request"]["kind"]["kind"] = json!("Deployment");
    assert_eq!(parse_review(&review), Err("expected a Pod, got \"Deployment\"".into()));
    assert!(parse_review(&json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"})).is_err());
}

#[test]
fn in_a_labelled_namespace_only_images_of_registry_namespaces_with_p2p_on_move() {
    let plan = rewriter().plan(&pod(), true, &|ns| ns == "team-a");
    assert_eq!(
        plan.patch,
        [
            json!({"op": "replace", "path": "/spec/containers/0/image", "value": format!("p2p.registry.example.com:65001/{DIGEST_APP}")}),
            json!({"op": "replace", "path": "/spec/initContainers/0/image", "value": "p2p.registry.example.com:65001/team-a/migrate:2.0"}),
        ]
    );
    assert_eq!(plan.pull_secrets, ["registry-creds"]);
    assert_eq!(rewriter().registry_namespaces(&pod()), ["team-a", "team-b"]);

    let both = rewriter().plan(&pod(), true, &|_| true);
    let paths: Vec<&str> = both.patch.iter().map(|p| p["path"].as_str().expect("path")).collect();
    assert_eq!(paths, ["/spec/containers/0/image", "/spec/containers/2/image", "/spec/initContainers/0/image"]);
    assert!(!both.patch.iter().any(|p| p["value"].as_str().expect("value").contains("nginx")), "Docker Hub stays");
}

#[test]
fn an_unlabelled_namespace_or_switches_all_off_change_nothing() {
    assert_eq!(rewriter().plan(&pod(), false, &|_| true), PodPlan::default());
    assert_eq!(rewriter().plan(&pod(), true, &|_| false), PodPlan::default());
    assert!(namespace_is_labelled(&json!({"metadata": {"labels": {"damselfly.io/acceleration": "p2p"}}})));
    assert!(!namespace_is_labelled(&json!({"metadata": {"labels": {"damselfly.io/acceleration": "off"}}})));
    assert!(!namespace_is_labelled(&json!({"metadata": {"name": "shop"}})));
}

#[test]
fn only_the_registry_s_own_address_is_rewritten() {
    let r = rewriter();
    assert_eq!(
        r.rewrite("registry.example.com/app:1"),
        Some(("app".into(), "p2p.registry.example.com:65001/app:1".into()))
    );
    assert_eq!(
        r.rewrite("REGISTRY.example.com/team-a/deep/path/app@sha256:ab"),
        Some(("team-a".into(), "p2p.registry.example.com:65001/team-a/deep/path/app@sha256:ab".into()))
    );
    for other in [
        "registry.example.com:5000/team-a/app:1",
        "nginx",
        "library/nginx:1",
        "registry.example.com.evil.io/team-a/x",
        "registry.example.com/../p2p/x:1",
        "registry.example.com/Team-A/x:1",
        "quay.io/team-a/app",
    ] {
        assert_eq!(r.rewrite(other), None, "{other}");
    }
}

#[test]
fn the_response_allows_the_pod_and_carries_the_patch_base64_encoded() {
    let plan = rewriter().plan(&pod(), true, &|ns| ns == "team-a");
    let answer = response("7f0b2891-916f-4ed6-b7cd-27bff1815a8c", &plan.patch, &[]);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], "7f0b2891-916f-4ed6-b7cd-27bff1815a8c");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let patch: Value =
        serde_json::from_slice(&STANDARD.decode(answer["response"]["patch"].as_str().expect("patch")).expect("base64"))
            .expect("JSON");
    assert_eq!(patch, Value::Array(plan.patch));
    let unchanged = response("u", &[], &["damselfly: the registry did not answer".into()]);
    assert_eq!(
        unchanged,
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "response": {"uid": "u", "allowed": true, "warnings": ["damselfly: the registry did not answer"]}})
    );
}

#[test]
fn a_pull_secret_for_the_registry_is_copied_for_the_acceleration_address() {
    let config = json!({"auths": {
        "https://registry.example.com": {"username": "robot$team-a+ci", "password": "s3cret", "auth": "cm9ib3Q="},
        "quay.io": {"auth": "eHl6"}
    }});
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "registry-creds", "namespace": "shop", "resourceVersion": "4711"},
        "data": {".dockerconfigjson": STANDARD.encode(config.to_string())}
    });
    let copy = rewriter().accelerated_secret(&secret).expect("a copy");
    let expected_config = json!({"auths": {"p2p.registry.example.com:65001":
        {"username": "robot$team-a+ci", "password": "s3cret", "auth": "cm9ib3Q="}}});
    assert_eq!(
        copy,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "registry-creds-damselfly-p2p", "namespace": "shop",
                         "labels": {"app.kubernetes.io/managed-by": "damselfly-webhook"},
                         "annotations": {"damselfly.io/copied-from": "registry-creds"}},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": STANDARD.encode(expected_config.to_string())}
        })
    );
    let elsewhere = json!({"type": "kubernetes.io/dockerconfigjson", "metadata": {"name": "q"},
        "data": {".dockerconfigjson": STANDARD.encode(json!({"auths": {"quay.io": {}}}).to_string())}});
    assert_eq!(rewriter().accelerated_secret(&elsewhere), None);
    assert_eq!(rewriter().accelerated_secret(&json!({"type": "Opaque"})), None);
}

#[test]
fn copied_pull_secrets_are_added_to_the_pod_once() {
    let names = vec!["registry-creds-damselfly-p2p".to_owned()];
    assert_eq!(
        pull_secret_patch(&pod(), &names),
        [json!({"op": "add", "path": "/spec/imagePullSecrets/-", "value": {"name": "registry-creds-damselfly-p2p"}})]
    );
    let bare = json!({"spec": {"containers": []}});
    assert_eq!(
        pull_secret_patch(&bare, &names),
        [json!({"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "registry-creds-damselfly-p2p"}]})]
    );
    let already = json!({"spec": {"imagePullSecrets": [{"name": "registry-creds-damselfly-p2p"}]}});
    assert!(pull_secret_patch(&already, &names).is_empty());
}

#[test]
fn only_kubernetes_object_names_reach_an_api_path() {
    for good in ["registry-creds", "a", "team-a.pull.1", &"x".repeat(63)] {
        assert!(is_object_name(good), "{good}");
    }
    for bad in ["", "Registry", "../kube-system/secrets/admin", "a/b", "-a", "a-", "a..b", "a b", &"x".repeat(64)] {
        assert!(!is_object_name(bad), "{bad}");
    }
    let mut review: Value = serde_json::from_str(REVIEW).expect("fixture");
    review["request"]["namespace"] = json!("shop/../kube-system");
    assert!(parse_review(&review).expect_err("refused").contains("not a Kubernetes namespace name"));
}

#[test]
fn a_pull_secret_named_outside_the_grammar_is_never_read() {
    let mut pod = pod();
    pod["spec"]["imagePullSecrets"] =
        json!([{"name": "../../kube-system/secrets/admin"}, {"name": "registry-creds"}, {"name": "x-damselfly-p2p"}]);
    let plan = rewriter().plan(&pod, true, &|_| true);
    assert_eq!(plan.pull_secrets, ["registry-creds"], "only a valid name, and never a copy of a copy");
}

fn copy() -> Value {
    let config = json!({"auths": {"registry.example.com": {"auth": "cm9ib3Q="}}});
    let secret = json!({
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "registry-creds", "namespace": "shop"},
        "data": {".dockerconfigjson": STANDARD.encode(config.to_string())}
    });
    rewriter().accelerated_secret(&secret).expect("a copy")
}

#[test]
fn a_missing_copy_is_created_and_one_already_right_is_not_written_again() {
    let copy = copy();
    assert_eq!(copy["metadata"]["labels"], json!({"app.kubernetes.io/managed-by": "damselfly-webhook"}));
    assert_eq!(secret_write(None, &copy), SecretWrite::Create(copy.clone()));
    // As the API server returns it: the same, plus what the server adds.
    let mut stored = copy.clone();
    stored["metadata"]["resourceVersion"] = json!("811");
    stored["metadata"]["uid"] = json!("5c7f0f57-3a41-4d8e-a0a5-0f4e6c1d2b3a");
    stored["metadata"]["labels"]["team"] = json!("shop");
    assert_eq!(secret_write(Some(&stored), &copy), SecretWrite::Unchanged);
}

#[test]
fn the_webhook_s_own_copy_is_updated_at_its_resource_version() {
    let copy = copy();
    let mut stored = copy.clone();
    stored["metadata"]["resourceVersion"] = json!("811");
    stored["data"][".dockerconfigjson"] = json!(STANDARD.encode("{\"auths\": {}}"));
    let mut expected = copy.clone();
    expected["metadata"]["resourceVersion"] = json!("811");
    assert_eq!(secret_write(Some(&stored), &copy), SecretWrite::Update(expected));
}

#[test]
fn a_secret_without_the_webhook_s_label_is_never_overwritten() {
    let copy = copy();
    let theirs = json!({
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "registry-creds-damselfly-p2p", "namespace": "shop", "resourceVersion": "5",
                     "labels": {"app.kubernetes.io/managed-by": "helm"}},
        "data": {".dockerconfigjson": "e30="}
    });
    let SecretWrite::Refuse(reason) = secret_write(Some(&theirs), &copy) else { panic!("must refuse") };
    assert_eq!(
        reason,
        "a Secret registry-creds-damselfly-p2p exists without the label app.kubernetes.io/managed-by=damselfly-webhook, \
         so it is not Damselfly's to overwrite; rename or remove it"
    );
    let unlabelled = json!({"metadata": {"name": "registry-creds-damselfly-p2p"}});
    assert!(matches!(secret_write(Some(&unlabelled), &copy), SecretWrite::Refuse(_)));
}
