//! Bootstrap tokens: a `bootstrap.kubernetes.io/token` Secret in kube-system makes
//! `<id>.<secret>` a bearer token for `system:bootstrap:<id>` in `system:bootstrappers`
//! and its extra groups, until it expires or the Secret goes; kubectl is the client.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::common::*;

const TOKEN: &str = "abcdef.0123456789abcdef";

/// `kubectl auth whoami` with the bootstrap token: the user, or None when unauthorized.
fn whoami(api: &TestApi, token: &str) -> Option<Value> {
    let out = api.kubectl(&[&format!("--token={token}"), "auth", "whoami", "-o", "json"]);
    if out.status.success() {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        return Some(v["status"]["userInfo"].clone());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Unauthorized"), "{stderr}");
    None
}

fn expiration(from_now: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(from_now))
        .round(jiff::Unit::Second)
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_token_authenticates_until_expiry() {
    let api = TestApi::start().await;
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "kube-system");
    assert!(whoami(&api, TOKEN).is_none(), "no Secret yet");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "bootstrap-token-abcdef" },
        "type": "bootstrap.kubernetes.io/token",
        "stringData": {
            "token-id": "abcdef",
            "token-secret": "0123456789abcdef",
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token",
            "expiration": expiration(3600),
        },
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let user = wait_until(Duration::from_secs(10), "the bootstrap token works", || {
        std::future::ready(whoami(&api, TOKEN))
    })
    .await;
    assert_eq!(user["username"], "system:bootstrap:abcdef");
    assert_eq!(
        user["groups"],
        json!([
            "system:bootstrappers",
            "system:bootstrappers:kubeadm:default-node-token",
            "system:authenticated"
        ])
    );
    assert!(
        whoami(&api, "abcdef.0123456789abcdee").is_none(),
        "wrong secret"
    );
    assert!(
        whoami(&api, "zzzzzz.0123456789abcdef").is_none(),
        "unknown id"
    );

    // Expired: refused (the expiry is read at each request).
    let patch = json!({ "stringData": { "expiration": expiration(-60) } });
    secrets
        .patch(
            "bootstrap-token-abcdef",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the expired token is refused",
        || std::future::ready(whoami(&api, TOKEN).is_none().then_some(())),
    )
    .await;

    // Valid again, then the Secret is deleted: refused.
    let patch = json!({ "stringData": { "expiration": expiration(3600) } });
    secrets
        .patch(
            "bootstrap-token-abcdef",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "the renewed token works", || {
        std::future::ready(whoami(&api, TOKEN))
    })
    .await;
    secrets
        .delete("bootstrap-token-abcdef", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the deleted token is refused",
        || std::future::ready(whoami(&api, TOKEN).is_none().then_some(())),
    )
    .await;
}
