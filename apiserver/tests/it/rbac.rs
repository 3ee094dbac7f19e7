//! RBAC end to end: the rbac.authorization.k8s.io/v1 API through kubectl, and an
//! apiserver started with `--authorization-mode=Node,RBAC` answering kube-rs clients of
//! several identities (token file users) and `kubectl auth can-i`.

use crate::common::{wait_until, TestApi, TOKEN};
use apiserver::authz::Mode;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

/// The HTTP code of a failed kube-rs call.
fn code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Err(kube::Error::Api(e)) => e.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn message<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> String {
    match r {
        Err(kube::Error::Api(e)) => e.message,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Waits until the aggregation step gave `view` the rules of `system:aggregate-to-view`.
async fn wait_for_view_rules(client: &kube::Client) {
    let roles: Api<ClusterRole> = Api::all(client.clone());
    wait_until(Duration::from_secs(20), "view aggregates its rules", || {
        let roles = roles.clone();
        async move {
            let view = roles.get("view").await.ok()?;
            (view.rules.unwrap_or_default().len() > 3).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_api_through_kubectl() {
    let mut api = TestApi::start().await;
    let out = api.kubectl_ok(&[
        "api-resources",
        "--api-group=rbac.authorization.k8s.io",
        "-o",
        "name",
    ]);
    for r in [
        "clusterrolebindings",
        "clusterroles",
        "rolebindings",
        "roles",
    ] {
        assert!(
            out.contains(&format!("{r}.rbac.authorization.k8s.io")),
            "{out}"
        );
    }
    // The default policy exists, marked as upstream marks it.
    let out = api.kubectl_ok(&["get", "clusterrole", "cluster-admin", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["metadata"]["labels"]["kubernetes.io/bootstrapping"],
        "rbac-defaults"
    );
    assert_eq!(
        v["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"],
        "true"
    );
    let out = api.kubectl_ok(&["get", "clusterrolebindings"]);
    for b in [
        "cluster-admin",
        "system:basic-user",
        "system:discovery",
        "system:kube-scheduler",
        "system:node-proxier",
    ] {
        assert!(out.contains(b), "{out}");
    }

    let out = api.kubectl_ok(&["get", "rolebindings", "-n", "kube-system"]);
    assert!(
        out.contains("system::leader-locking-kube-scheduler")
            && out.contains("Role/extension-apiserver-authentication-reader"),
        "{out}"
    );
    let out = api.kubectl_ok(&["get", "clusterroles"]);
    for r in [
        "system:volume-scheduler",
        "system:node-bootstrapper",
        "system:auth-delegator",
    ] {
        assert!(out.contains(r), "{out}");
    }
    api.kubectl_ok(&["create", "namespace", "r1"]);
    api.kubectl_ok(&[
        "create",
        "role",
        "pod-reader",
        "-n",
        "r1",
        "--verb=get,list",
        "--resource=pods",
    ]);
    api.kubectl_ok(&[
        "create",
        "rolebinding",
        "read-pods",
        "-n",
        "r1",
        "--role=pod-reader",
        "--user=alice",
        "--serviceaccount=r1:app",
    ]);
    api.kubectl_ok(&[
        "create",
        "clusterrole",
        "node-reader",
        "--verb=get",
        "--resource=nodes",
    ]);
    api.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "read-nodes",
        "--clusterrole=node-reader",
        "--group=readers",
    ]);
    let out = api.kubectl_ok(&["get", "rolebinding", "read-pods", "-n", "r1", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"})
    );
    assert_eq!(v["subjects"][0]["kind"], "User");
    assert_eq!(
        v["subjects"][1],
        json!({"kind": "ServiceAccount", "name": "app", "namespace": "r1"})
    );
    assert!(api
        .kubectl_ok(&["get", "roles", "-n", "r1"])
        .contains("pod-reader"));
    let out = api.kubectl_ok(&["get", "rolebinding", "read-pods", "-n", "r1", "-o", "wide"]);
    assert!(
        out.contains("Role/pod-reader") && out.contains("alice") && out.contains("r1/app"),
        "{out}"
    );

    let out = api.kubectl_ok(&["describe", "rolebinding", "read-pods", "-n", "r1"]);
    assert!(out.contains("pod-reader") && out.contains("alice"), "{out}");
    let out = api.kubectl_ok(&["describe", "clusterrole", "node-reader"]);
    assert!(out.contains("nodes") && out.contains("[get]"), "{out}");
    // roleRef cannot change: 422.
    let out = api.kubectl(&[
        "patch",
        "rolebinding",
        "read-pods",
        "-n",
        "r1",
        "--type=merge",
        "-p",
        r#"{"roleRef":{"name":"other"}}"#,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot change roleRef") && err.contains("is invalid"),
        "{err}"
    );
    // Subjects may change.
    api.kubectl_ok(&[
        "patch",
        "rolebinding",
        "read-pods",
        "-n",
        "r1",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/subjects/1"}]"#,
    ]);

    // Validation as upstream.
    let bad = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"bad","namespace":"r1"},"rules":[{"apiGroups":[""],"resources":["pods"]}]}"#;
    let out = api.kubectl_stdin(&["apply", "-f", "-"], Some(bad));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rules[0].verbs: Required value: verbs must contain at least one value"),
        "{err}"
    );
    let bad = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"bad","namespace":"r1"},"subjects":[{"kind":"Robot","name":"r"}]}"#;
    let out = api.kubectl_stdin(&["apply", "-f", "-"], Some(bad));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("roleRef.kind: Unsupported value: \"\""),
        "{err}"
    );
    assert!(
        err.contains("subjects[0].kind: Unsupported value: \"Robot\""),
        "{err}"
    );

    // apply creates and updates.
    let role = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"extra-view","labels":{"rbac.authorization.k8s.io/aggregate-to-view":"true"}},"rules":[{"apiGroups":["example.com"],"resources":["widgets"],"verbs":["get"]}]}"#;
    api.kubectl_stdin(&["apply", "-f", "-"], Some(role));
    // Aggregation: view (and edit and admin, which aggregate view) pick the rule up.
    let client = api.client().await;
    let roles: Api<ClusterRole> = Api::all(client.clone());
    for name in ["view", "edit", "admin"] {
        let roles = roles.clone();
        wait_until(
            Duration::from_secs(20),
            "aggregated widget rule",
            move || {
                let roles = roles.clone();
                async move {
                    let r = roles.get(name).await.ok()?;
                    r.rules
                        .unwrap_or_default()
                        .iter()
                        .any(|r| r.resources.as_deref() == Some(&["widgets".to_string()][..]))
                        .then_some(())
                }
            },
        )
        .await;
    }
    api.kubectl_ok(&["delete", "clusterrole", "extra-view"]);
    wait_until(
        Duration::from_secs(20),
        "the widget rule leaves view",
        || {
            let roles = roles.clone();
            async move {
                let r = roles.get("view").await.ok()?;
                (!r.rules
                    .unwrap_or_default()
                    .iter()
                    .any(|r| r.resources.as_deref() == Some(&["widgets".to_string()][..])))
                .then_some(())
            }
        },
    )
    .await;
    api.kubectl_ok(&["delete", "rolebinding", "read-pods", "-n", "r1"]);
    api.kubectl_ok(&["delete", "clusterrolebinding", "read-nodes"]);
    assert!(!api
        .kubectl_ok(&["get", "clusterrolebindings"])
        .contains("read-nodes"));

    // A restart puts back default permissions that were taken away (autoupdate), and
    // leaves alone a default whose autoupdate annotation was turned off.
    api.kubectl_ok(&[
        "patch",
        "clusterrole",
        "system:basic-user",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/rules/1"}]"#,
    ]);
    api.kubectl_ok(&["patch", "clusterrolebinding", "system:discovery", "--type=merge", "-p", r#"{"metadata":{"annotations":{"rbac.authorization.kubernetes.io/autoupdate":"false"}},"subjects":null}"#]);
    api.restart().await;
    let out = api.kubectl_ok(&["get", "clusterrole", "system:basic-user", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rules"].as_array().unwrap().len(), 2, "{v}");
    let out = api.kubectl_ok(&[
        "get",
        "clusterrolebinding",
        "system:discovery",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v.get("subjects").is_none_or(|s| s.is_null()), "{v}");
}

/// Users of the token file in [`secured`].
const SCHEDULER_TOKEN: &str = "scheduler-token";
const NODE_TOKEN: &str = "node1-token";
const ALICE_TOKEN: &str = "alice-token";

/// An apiserver with `--authorization-mode=Node,RBAC`, anonymous requests allowed, and
/// token users: admin (system:masters), the scheduler, the kubelet of node n1 and alice.
async fn secured(dir: &tempfile::TempDir) -> TestApi {
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        format!(
            "{TOKEN},admin,admin-uid,\"system:masters\"\n\
             {SCHEDULER_TOKEN},system:kube-scheduler,sched-uid\n\
             {NODE_TOKEN},system:node:n1,n1-uid,\"system:nodes\"\n\
             {ALICE_TOKEN},alice,alice-uid\n"
        ),
    )
    .unwrap();
    TestApi::start_with(move |c| {
        c.authorization_modes = vec![Mode::Node, Mode::Rbac];
        c.token_auth_file = Some(tokens);
        c.anonymous_auth = true;
    })
    .await
}

/// A kube-rs client with a bearer token (none: anonymous).
async fn client_as(api: &TestApi, token: Option<&str>) -> kube::Client {
    let text = std::fs::read_to_string(api.kubeconfig_path()).unwrap();
    let text = match token {
        Some(t) => text.replace(&format!("token: {TOKEN}"), &format!("token: {t}")),
        None => text.replace(&format!("  user:\n    token: {TOKEN}\n"), "  user: {}\n"),
    };
    let kc: kube::config::Kubeconfig = serde_yaml::from_str(&text).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_rbac_authorization() {
    let dir = tempfile::tempdir().unwrap();
    let api = secured(&dir).await;
    let admin = api.client().await;
    wait_for_view_rules(&admin).await;

    // Anonymous: authenticated as system:anonymous, which may read nothing.
    let anonymous = client_as(&api, None).await;
    let all_secrets: Api<Secret> = Api::all(anonymous.clone());
    let r = all_secrets.list(&ListParams::default()).await;
    assert_eq!(
        message(r),
        "secrets is forbidden: User \"system:anonymous\" cannot list resource \"secrets\" in API group \"\" at the cluster scope"
    );
    // ... but may read the version and health (system:public-info-viewer).
    assert!(anonymous.apiserver_version().await.is_ok());
    // A token nobody issued: 401.
    let forged = client_as(&api, Some("forged")).await;
    assert_eq!(
        code(
            Api::<Secret>::all(forged)
                .list(&ListParams::default())
                .await
        ),
        401
    );

    // A ServiceAccount bound to view in its namespace.
    api.kubectl_ok(&["create", "namespace", "team"]);
    api.kubectl_ok(&[
        "create",
        "rolebinding",
        "viewer",
        "-n",
        "team",
        "--clusterrole=view",
        "--serviceaccount=team:viewer",
    ]);
    api.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "-n",
        "team",
        "--from-literal=k=v",
    ]);
    // A real ServiceAccount token (TokenRequest), as a pod would use.
    api.kubectl_ok(&["create", "serviceaccount", "viewer", "-n", "team"]);
    let token = api.kubectl_ok(&["create", "token", "viewer", "-n", "team"]);
    let sa = client_as(&api, Some(token.trim())).await;
    let pods: Api<Pod> = Api::namespaced(sa.clone(), "team");
    wait_until(Duration::from_secs(10), "the binding takes effect", || {
        let pods = pods.clone();
        async move { pods.list(&ListParams::default()).await.ok() }
    })
    .await;
    assert_eq!(
        code(
            Api::<Pod>::namespaced(sa.clone(), "default")
                .list(&ListParams::default())
                .await
        ),
        403
    );
    let r = Api::<Secret>::namespaced(sa.clone(), "team")
        .get("s1")
        .await;
    assert_eq!(
        message(r),
        "secrets \"s1\" is forbidden: User \"system:serviceaccount:team:viewer\" cannot get resource \"secrets\" in API group \"\" in the namespace \"team\""
    );
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap();
    assert_eq!(
        code(
            Api::<ConfigMap>::namespaced(sa.clone(), "team")
                .create(&PostParams::default(), &cm)
                .await
        ),
        403
    );
    assert_eq!(
        code(
            Api::<Node>::all(sa.clone())
                .list(&ListParams::default())
                .await
        ),
        403
    );

    // The same ServiceAccount's token for another audience, or a forged one: 401.
    let other = api.kubectl_ok(&[
        "create",
        "token",
        "viewer",
        "-n",
        "team",
        "--audience=vault",
    ]);
    let r = Api::<Pod>::namespaced(client_as(&api, Some(other.trim())).await, "team")
        .list(&ListParams::default())
        .await;
    assert_eq!(code(r), 401);
    let mut forged = token.trim().to_string();
    forged.pop();
    let r = Api::<Pod>::namespaced(client_as(&api, Some(&forged)).await, "team")
        .list(&ListParams::default())
        .await;
    assert_eq!(code(r), 401);
    // TokenReview knows it too.
    let review: k8s_openapi::api::authentication::v1::TokenReview =
        serde_json::from_value(json!({"spec": {"token": token.trim()}})).unwrap();
    let answered = Api::<k8s_openapi::api::authentication::v1::TokenReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    let status = answered.status.unwrap();
    assert_eq!(status.authenticated, Some(true));
    assert_eq!(
        status.user.unwrap().username.as_deref(),
        Some("system:serviceaccount:team:viewer")
    );

    // The scheduler binds pods but reads no secrets.
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
    Api::<Node>::all(admin.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
    let node2: Node = serde_json::from_value(json!({"metadata": {"name": "n2"}})).unwrap();
    Api::<Node>::all(admin.clone())
        .create(&PostParams::default(), &node2)
        .await
        .unwrap();
    let pod = |name: &str, secret: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "containers": [{"name": "c", "image": "busybox"}],
                "volumes": [{"name": "s", "secret": {"secretName": secret}}],
            }
        }))
        .unwrap()
    };
    let admin_pods: Api<Pod> = Api::namespaced(admin.clone(), "team");
    admin_pods
        .create(&PostParams::default(), &pod("p1", "s1"))
        .await
        .unwrap();
    admin_pods
        .create(&PostParams::default(), &pod("p2", "s2"))
        .await
        .unwrap();
    let scheduler = client_as(&api, Some(SCHEDULER_TOKEN)).await;
    let sched_pods: Api<Pod> = Api::namespaced(scheduler.clone(), "team");
    assert_eq!(
        sched_pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let binding = |node: &str| json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p1"}, "target": {"kind": "Node", "name": node}});
    sched_pods
        .create_subresource::<_, serde_json::Value>(
            "binding",
            "p1",
            &PostParams::default(),
            &binding("n1"),
        )
        .await
        .unwrap();
    assert_eq!(
        code(
            Api::<Secret>::namespaced(scheduler.clone(), "team")
                .get("s1")
                .await
        ),
        403
    );
    assert_eq!(
        code(
            Api::<Secret>::all(scheduler.clone())
                .list(&ListParams::default())
                .await
        ),
        403
    );

    // The kubelet of n1: its own node and the secrets of pods bound to it, nothing else.
    let kubelet = client_as(&api, Some(NODE_TOKEN)).await;
    let secrets: Api<Secret> = Api::namespaced(kubelet.clone(), "team");
    api.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "s2",
        "-n",
        "team",
        "--from-literal=k=v",
    ]);
    wait_until(
        Duration::from_secs(10),
        "the binding reaches the watch cache",
        || {
            let secrets = secrets.clone();
            async move { secrets.get("s1").await.ok() }
        },
    )
    .await;
    assert_eq!(code(secrets.get("s2").await), 403, "p2 is not bound to n1");
    assert_eq!(code(secrets.list(&ListParams::default()).await), 403);
    let nodes: Api<Node> = Api::all(kubelet.clone());
    let labels = json!({"metadata": {"labels": {"x": "y"}}});
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();
    assert_eq!(
        code(
            nodes
                .patch("n2", &PatchParams::default(), &Patch::Merge(&labels))
                .await
        ),
        403
    );
    let status = json!({"status": {"phase": "Running"}});
    let kubelet_pods: Api<Pod> = Api::namespaced(kubelet.clone(), "team");
    kubelet_pods
        .patch_status("p1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(
        code(
            kubelet_pods
                .patch_status("p2", &PatchParams::default(), &Patch::Merge(&status))
                .await
        ),
        403
    );

    // NodeRestriction: it registers only itself and creates only its own mirror pods.
    let n3: Node = serde_json::from_value(json!({"metadata": {"name": "n3"}})).unwrap();
    let m = message(nodes.create(&PostParams::default(), &n3).await);
    assert!(
        m.contains("node \"n1\" is not allowed to modify node \"n3\""),
        "{m}"
    );
    let mirror = |name: &str, annotated: bool| -> Pod {
        let annotations = if annotated {
            json!({"kubernetes.io/config.mirror": "hash"})
        } else {
            json!({})
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap()
    };
    let m = message(
        kubelet_pods
            .create(&PostParams::default(), &mirror("static-a", false))
            .await,
    );
    assert!(m.contains("node \"n1\" can only create mirror pods"), "{m}");
    kubelet_pods
        .create(&PostParams::default(), &mirror("static-b", true))
        .await
        .unwrap();

    // Without a binding alice may do nothing but ask about herself.
    let alice = client_as(&api, Some(ALICE_TOKEN)).await;
    assert_eq!(
        code(
            Api::<Pod>::namespaced(alice.clone(), "team")
                .list(&ListParams::default())
                .await
        ),
        403
    );
    assert!(alice.apiserver_version().await.is_ok());

    // kubectl auth can-i (impersonating, as kubectl --as does) answers truthfully.
    let can_i = |args: &[&str]| -> String {
        let out = api.kubectl(args);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        can_i(&[
            "auth",
            "can-i",
            "list",
            "pods",
            "-n",
            "team",
            "--as=system:serviceaccount:team:viewer"
        ]),
        "yes"
    );
    assert_eq!(
        can_i(&[
            "auth",
            "can-i",
            "get",
            "secrets",
            "-n",
            "team",
            "--as=system:serviceaccount:team:viewer"
        ]),
        "no"
    );
    assert_eq!(
        can_i(&[
            "auth",
            "can-i",
            "list",
            "pods",
            "-n",
            "default",
            "--as=system:serviceaccount:team:viewer"
        ]),
        "no"
    );
    assert_eq!(
        can_i(&[
            "auth",
            "can-i",
            "create",
            "pods",
            "--subresource=binding",
            "-n",
            "team",
            "--as=system:kube-scheduler"
        ]),
        "yes"
    );
    assert_eq!(
        can_i(&[
            "auth",
            "can-i",
            "get",
            "secrets",
            "-n",
            "team",
            "--as=system:kube-scheduler"
        ]),
        "no"
    );
    assert_eq!(
        can_i(&[
            "auth",
            "can-i",
            "get",
            "/metrics",
            "--as=alice",
            "--as-group=system:monitoring"
        ]),
        "yes"
    );
    assert_eq!(
        can_i(&["auth", "can-i", "get", "/metrics", "--as=alice"]),
        "no"
    );
    assert_eq!(can_i(&["auth", "can-i", "delete", "nodes"]), "yes");
    // Every daemon may read where the apiservers are (pikube's failover), nothing more.
    assert_eq!(
        can_i(&[
            "auth",
            "can-i",
            "get",
            "endpoints/kubernetes",
            "-n",
            "default",
            "--as=system:kube-scheduler"
        ]),
        "yes"
    );
    assert_eq!(
        can_i(&[
            "auth",
            "can-i",
            "get",
            "endpoints/web",
            "-n",
            "default",
            "--as=system:kube-scheduler"
        ]),
        "no"
    );
    let out = api.kubectl_ok(&[
        "auth",
        "can-i",
        "--list",
        "-n",
        "team",
        "--as=system:serviceaccount:team:viewer",
    ]);
    assert!(out.contains("pods ") && !out.contains("secrets "), "{out}");
    // Impersonation itself is authorized: alice may not act as someone else.
    let text = std::fs::read_to_string(api.kubeconfig_path())
        .unwrap()
        .replace(
            &format!("token: {TOKEN}"),
            &format!("token: {ALICE_TOKEN}\n    as: admin"),
        );
    let kc: kube::config::Kubeconfig = serde_yaml::from_str(&text).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let alice_as_admin = kube::Client::try_from(config).unwrap();
    let r = Api::<Pod>::namespaced(alice_as_admin, "team")
        .list(&ListParams::default())
        .await;
    assert_eq!(
        message(r),
        "users \"admin\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
    // A deleted ServiceAccount's tokens stop working.
    api.kubectl_ok(&["delete", "serviceaccount", "viewer", "-n", "team"]);
    wait_until(
        Duration::from_secs(10),
        "the token of a deleted account is refused",
        || {
            let pods = pods.clone();
            async move {
                match pods.list(&ListParams::default()).await {
                    Err(kube::Error::Api(e)) if e.code == 401 => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;
    let _ = dir;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_is_prevented() {
    let dir = tempfile::tempdir().unwrap();
    let api = secured(&dir).await;
    let admin = api.client().await;
    // alice administers namespace team (admin aggregates edit, which aggregates view).
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    wait_until(
        Duration::from_secs(20),
        "admin aggregates edit and view",
        || {
            let roles = roles.clone();
            async move {
                let rules = roles.get("admin").await.ok()?.rules.unwrap_or_default();
                rules
                    .iter()
                    .any(|r| r.resources.iter().flatten().any(|x| x == "pods/log"))
                    .then_some(())
            }
        },
    )
    .await;
    api.kubectl_ok(&["create", "namespace", "team"]);
    api.kubectl_ok(&[
        "create",
        "rolebinding",
        "alice-admin",
        "-n",
        "team",
        "--clusterrole=admin",
        "--user=alice",
    ]);
    let alice = client_as(&api, Some(ALICE_TOKEN)).await;
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(alice.clone(), "team");
    let binding = |name: &str, role: &str| -> k8s_openapi::api::rbac::v1::RoleBinding {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}],
        }))
        .unwrap()
    };
    // She may hand out what she holds...
    bindings
        .create(&PostParams::default(), &binding("bob-view", "view"))
        .await
        .unwrap();
    // ... but not cluster-admin, not even in her namespace.
    let r = bindings
        .create(
            &PostParams::default(),
            &binding("bob-root", "cluster-admin"),
        )
        .await;
    let m = message(r);
    assert!(
        m.starts_with(
            "rolebindings.rbac.authorization.k8s.io \"bob-root\" is forbidden: user \"alice\""
        ) && m.contains("is attempting to grant RBAC permissions not currently held"),
        "{m}"
    );
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(alice.clone(), "team");
    let role = |name: &str, resource: &str| -> k8s_openapi::api::rbac::v1::Role {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": [resource], "verbs": ["get"]}],
        }))
        .unwrap()
    };
    roles
        .create(&PostParams::default(), &role("secret-reader", "secrets"))
        .await
        .unwrap();
    let r = roles
        .create(&PostParams::default(), &role("node-reader", "nodes"))
        .await;
    assert!(message(r).contains("{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\"]}"));
    // The privileged group is not limited.
    let as_admin: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(admin.clone(), "team");
    as_admin
        .create(
            &PostParams::default(),
            &binding("bob-root", "cluster-admin"),
        )
        .await
        .unwrap();
    // Changing only what the garbage collector changes grants nothing: allowed.
    let finalizer = json!({"metadata": {"finalizers": ["example.com/keep"]}});
    bindings
        .patch(
            "bob-root",
            &PatchParams::default(),
            &Patch::Merge(&finalizer),
        )
        .await
        .unwrap();
    let label = json!({"metadata": {"labels": {"a": "b"}, "finalizers": null}});
    let r = bindings
        .patch("bob-root", &PatchParams::default(), &Patch::Merge(&label))
        .await;
    assert_eq!(code(r), 403);
}
