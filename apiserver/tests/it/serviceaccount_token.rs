//! `serviceaccounts/token` (TokenRequest): the token a client gets is a JWT that the
//! apiserver's public key verifies, with upstream's claims; upstream's errors for a
//! missing ServiceAccount, a too short expiry and bad bound objects; `kubectl create
//! token`.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

use crate::common::*;

/// The claims of `token`, verified with the test apiserver's public key for `audience`.
fn verify(api: &TestApi, token: &str, audience: &str) -> Value {
    let pem = std::fs::read(api.dir.path().join("sa.pub")).unwrap();
    let key = DecodingKey::from_ec_pem(&pem).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[audience]);
    v.set_issuer(&[SERVICE_ACCOUNT_ISSUER]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap_or_else(|e| panic!("token does not verify: {e}"))
        .claims
}

fn request(spec: Value) -> TokenRequest {
    serde_json::from_value(json!({ "spec": spec })).unwrap()
}

async fn error_of(sas: &Api<ServiceAccount>, name: &str, req: &TokenRequest) -> kube::core::Status {
    match sas
        .create_token_request(name, &PostParams::default(), req)
        .await
    {
        Err(kube::Error::Api(e)) => *e,
        other => panic!("expected an API error for {req:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn token_request_claims_bounds_and_errors() {
    let api = TestApi::start_with(|c| {
        c.service_account.max_token_expiration = Some(Duration::from_secs(10 * 3600));
    })
    .await;
    let client = api.client().await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sa = sas
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "robot" } })).unwrap(),
        )
        .await
        .unwrap();
    let pod = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": "app" },
                "spec": { "serviceAccountName": "robot",
                          "containers": [{ "name": "c", "image": "busybox" }] }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let pod_uid = pod.metadata.uid.clone().unwrap();

    // A token bound to the pod, for an audience of its own.
    let answer = sas
        .create_token_request(
            "robot",
            &PostParams::default(),
            &request(json!({
                "audiences": ["vault"],
                "expirationSeconds": 7200,
                "boundObjectRef": { "kind": "Pod", "apiVersion": "v1", "name": "app", "uid": pod_uid },
            })),
        )
        .await
        .unwrap();
    let status = answer.status.clone().unwrap();
    let claims = verify(&api, &status.token, "vault");
    assert_eq!(claims["sub"], "system:serviceaccount:default:robot");
    assert_eq!(claims["iss"], SERVICE_ACCOUNT_ISSUER);
    assert_eq!(claims["aud"], json!(["vault"]));
    let k8s = &claims["kubernetes.io"];
    assert_eq!(k8s["namespace"], "default");
    assert_eq!(k8s["serviceaccount"]["name"], "robot");
    assert_eq!(
        k8s["serviceaccount"]["uid"].as_str(),
        sa.metadata.uid.as_deref()
    );
    assert_eq!(k8s["pod"]["name"], "app");
    assert_eq!(k8s["pod"]["uid"], json!(pod_uid));
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(claims["exp"].as_i64().unwrap() - iat, 7200);
    assert_eq!(claims["nbf"].as_i64().unwrap(), iat);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert_eq!(
        status.expiration_timestamp.0.as_second(),
        claims["exp"].as_i64().unwrap()
    );
    assert_eq!(answer.spec.expiration_seconds, Some(7200));
    assert_eq!(answer.metadata.name.as_deref(), Some("robot"));

    // No spec: the API audiences (the issuer) and one hour; no bound object.
    let answer = sas
        .create_token_request("robot", &PostParams::default(), &request(json!({})))
        .await
        .unwrap();
    let claims = verify(&api, &answer.status.unwrap().token, SERVICE_ACCOUNT_ISSUER);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert!(claims["kubernetes.io"].get("pod").is_none());
    assert_eq!(answer.spec.audiences, [SERVICE_ACCOUNT_ISSUER]);

    // Longer than --service-account-max-token-expiration: cut to it.
    let answer = sas
        .create_token_request(
            "robot",
            &PostParams::default(),
            &request(json!({ "expirationSeconds": 48 * 3600 })),
        )
        .await
        .unwrap();
    assert_eq!(answer.spec.expiration_seconds, Some(10 * 3600));

    // Errors, as upstream answers them.
    let e = error_of(&sas, "nobody", &request(json!({}))).await;
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"), "{e:?}");
    assert_eq!(e.message, "serviceaccounts \"nobody\" not found");
    let e = error_of(&sas, "robot", &request(json!({ "expirationSeconds": 599 }))).await;
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{e:?}");
    assert!(
        e.message
            .contains("spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"),
        "{}",
        e.message
    );
    let bound = |r: Value| request(json!({ "boundObjectRef": r }));
    let e = error_of(
        &sas,
        "robot",
        &bound(json!({ "kind": "Pod", "apiVersion": "v1", "name": "gone" })),
    )
    .await;
    assert_eq!(e.code, 404, "{e:?}");
    assert_eq!(e.message, "pods \"gone\" not found");
    let e = error_of(
        &sas,
        "robot",
        &bound(json!({ "kind": "Pod", "apiVersion": "v1", "name": "app", "uid": "not-its-uid" })),
    )
    .await;
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"), "{e:?}");
    assert!(
        e.message.contains("does not match the UID in record"),
        "{e:?}"
    );
    let e = error_of(
        &sas,
        "robot",
        &bound(json!({ "kind": "ConfigMap", "apiVersion": "v1", "name": "x" })),
    )
    .await;
    assert_eq!(e.code, 400, "{e:?}");
    assert_eq!(
        e.message,
        "cannot bind token to object of type v1, Kind=ConfigMap"
    );
    // A pod running as another ServiceAccount.
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({ "metadata": { "name": "other" } })).unwrap(),
    )
    .await
    .unwrap();
    let e = error_of(
        &sas,
        "other",
        &bound(json!({ "kind": "Pod", "apiVersion": "v1", "name": "app" })),
    )
    .await;
    assert_eq!(e.code, 400, "{e:?}");
    assert!(e.message.contains("different serviceaccount name"), "{e:?}");

    // A Secret binding names the secret.
    let secret: k8s_openapi::api::core::v1::Secret = Api::namespaced(client.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "s" } })).unwrap(),
        )
        .await
        .unwrap();
    let answer = sas
        .create_token_request(
            "robot",
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    bound_object_ref: Some(BoundObjectReference {
                        kind: Some("Secret".into()),
                        api_version: Some("v1".into()),
                        name: Some("s".into()),
                        uid: None,
                    }),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let claims = verify(&api, &answer.status.unwrap().token, SERVICE_ACCOUNT_ISSUER);
    assert_eq!(
        claims["kubernetes.io"]["secret"]["uid"].as_str(),
        secret.metadata.uid.as_deref()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_token() {
    let api = TestApi::start().await;
    api.kubectl_ok(&["create", "serviceaccount", "builder", "-n", "default"]);
    let discovery = api.kubectl_ok(&["get", "--raw", "/api/v1"]);
    assert!(
        discovery.contains(r#""name":"serviceaccounts/token""#),
        "{discovery}"
    );
    let token = api.kubectl_ok(&[
        "create",
        "token",
        "builder",
        "-n",
        "default",
        "--audience=ci",
        "--duration=20m",
    ]);
    let claims = verify(&api, token.trim(), "ci");
    assert_eq!(claims["sub"], "system:serviceaccount:default:builder");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        1200
    );
    let out = api.kubectl(&["create", "token", "nobody", "-n", "default"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"serviceaccounts "nobody" not found"#),
        "{stderr}"
    );
    let out = api.kubectl(&["create", "token", "builder", "--duration=5m"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("may not specify a duration less than 10 minutes"),
        "{stderr}"
    );
}

#[tokio::test]
async fn without_a_signing_key_the_subresource_says_so() {
    let api = TestApi::start_with(|c| c.service_account = Default::default()).await;
    let sas: Api<ServiceAccount> = Api::namespaced(api.client().await, "default");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({ "metadata": { "name": "robot" } })).unwrap(),
    )
    .await
    .unwrap();
    let e = error_of(&sas, "robot", &request(json!({}))).await;
    assert_eq!(e.code, 404, "{e:?}");
    assert!(
        e.message.contains("--service-account-signing-key-file"),
        "{}",
        e.message
    );
}
