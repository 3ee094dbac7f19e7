//! Upstream's `ServiceAccount` admission plugin (plugin/pkg/admission/serviceaccount), for
//! pod creates. Mutating: a Pod runs as the `default` ServiceAccount unless it names one,
//! takes its image pull secrets when it names none, and unless the Pod or its ServiceAccount opts out, gets the `kube-api-access-<random>`
//! projected volume (a bound token, the cluster CA, the namespace) mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container and init container.
//! Validating: the ServiceAccount exists; a mirror pod (a kubelet's static pod) names no
//! ServiceAccount, Secret or token projection, since the kubelet made it from a file
//! without the API's say (ConfigMaps are NodeRestriction's concern, as upstream).

use super::Attributes;
use crate::object;
use crate::rest;
use crate::status::ApiResult;
use crate::Apiserver;
use serde_json::{json, Value};
use std::time::Duration;

const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The prefix of the token volume's name (upstream's `ServiceAccountVolumeName` + "-").
const VOLUME_PREFIX: &str = "kube-api-access-";
/// Where the token volume is mounted (upstream's `DefaultAPITokenMountPath`).
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Upstream's `WarnOnlyBoundTokenExpirationSeconds`: a token of 1h7s, which the apiserver
/// may extend (and then warns on use past the hour) for clients that never reread it.
const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// The annotation of a static pod's mirror pod.
const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";
/// Lookups of a missing `default` ServiceAccount before giving up: the serviceaccount
/// controller creates it just after its namespace, so a pod created right after the
/// namespace waits for it, as upstream (10 attempts, 100-200ms apart).
const DEFAULT_ATTEMPTS: usize = 10;

fn is_mirror(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(CONFIG_MIRROR))
        .is_some()
}

fn service_account_name(pod: &Value) -> &str {
    pod.pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The ServiceAccount: from the cache, else from etcd, retried a while for `default`.
async fn service_account(
    api: &Apiserver,
    a: &Attributes<'_>,
    ns: &str,
    name: &str,
) -> ApiResult<Value> {
    let info = super::resource("", "serviceaccounts")?;
    let key = object::key(info, Some(ns), name);
    if let Some(sa) = api.cache(info).get(&key) {
        return Ok(sa.value());
    }
    let attempts = if name == DEFAULT_SERVICE_ACCOUNT {
        DEFAULT_ATTEMPTS
    } else {
        1
    };
    let interval = Duration::from_millis(100 + rand::random_range(0..100));
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(interval).await;
        }
        if let Some(kv) = api.store.get(&key).await? {
            return rest::decode_stored(api, info, &kv);
        }
    }
    Err(a.forbidden(format!(
        "error looking up service account {ns}/{name}: serviceaccount \"{name}\" not found"
    )))
}

/// Defaults the ServiceAccount and mounts its token.
pub async fn admit_pod_create(
    api: &Apiserver,
    a: &Attributes<'_>,
    ns: &str,
    pod: &mut Value,
) -> ApiResult<()> {
    if is_mirror(pod) || !pod.get("spec").is_some_and(Value::is_object) {
        return Ok(());
    }
    if service_account_name(pod).is_empty() {
        pod["spec"]["serviceAccountName"] = json!(DEFAULT_SERVICE_ACCOUNT);
    }
    let name = service_account_name(pod).to_string();
    let sa = service_account(api, a, ns, &name).await?;
    copy_image_pull_secrets(pod, &sa);
    if should_automount(pod, &sa) {
        mount_token(pod, &random_suffix());
    }
    Ok(())
}

/// A pod that names no image pull secrets gets its ServiceAccount's.
fn copy_image_pull_secrets(pod: &mut Value, sa: &Value) {
    let has_own = pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let from_sa = sa
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty());
    if let (false, Some(secrets)) = (has_own, from_sa) {
        let names: Vec<Value> = secrets
            .iter()
            .filter_map(|s| s.get("name"))
            .map(|n| json!({ "name": n }))
            .collect();
        pod["spec"]["imagePullSecrets"] = Value::Array(names);
    }
}

/// The pod's `automountServiceAccountToken` wins over the ServiceAccount's; both unset
/// means mount.
fn should_automount(pod: &Value, sa: &Value) -> bool {
    pod.pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true)
}

/// Five characters of upstream's `utilrand.String` alphabet (no vowels, no look-alikes).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Upstream's projected token volume.
fn token_volume_source() -> Value {
    json!({
        "defaultMode": 420,
        "sources": [
            { "serviceAccountToken": { "expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token" } },
            { "configMap": { "name": "kube-root-ca.crt", "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
            { "downwardAPI": { "items": [{ "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } }] } },
        ],
    })
}

/// Mounts the token volume in every container and init container that has nothing mounted
/// at [`MOUNT_PATH`], adding the volume (named with `suffix`) if one does and the pod has no
/// `kube-api-access-` volume yet.
fn mount_token(pod: &mut Value, suffix: &str) {
    let spec = &mut pod["spec"];
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .find(|n| n.starts_with(VOLUME_PREFIX))
                .map(String::from)
        });
    let volume_name = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_PREFIX}{suffix}"));
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers {
            let has_mount = c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .is_some_and(|ms| {
                    ms.iter()
                        .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH))
                });
            if has_mount {
                continue;
            }
            let mount = json!({ "name": volume_name, "readOnly": true, "mountPath": MOUNT_PATH });
            match c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                Some(ms) => ms.push(mount),
                None => c["volumeMounts"] = json!([mount]),
            }
            mounted = true;
        }
    }
    if mounted && existing.is_none() {
        let volume = json!({ "name": volume_name, "projected": token_volume_source() });
        match spec.get_mut("volumes").and_then(Value::as_array_mut) {
            Some(vs) => vs.push(volume),
            None => spec["volumes"] = json!([volume]),
        }
    }
}

/// The ServiceAccount exists; a mirror pod references none of what the API guards.
pub async fn validate_pod_create(
    api: &Apiserver,
    a: &Attributes<'_>,
    ns: &str,
    pod: &Value,
) -> ApiResult<()> {
    if is_mirror(pod) {
        return check_mirror_pod(pod).map_err(|why| a.forbidden(why));
    }
    let name = service_account_name(pod);
    if name.is_empty() {
        let pod_name = object::name(pod).unwrap_or(a.name);
        return Err(a.forbidden(format!(
            "no service account specified for pod {ns}/{pod_name}"
        )));
    }
    service_account(api, a, ns, name).await.map(drop)
}

fn check_mirror_pod(pod: &Value) -> Result<(), &'static str> {
    if !service_account_name(pod).is_empty() {
        return Err("a mirror pod may not reference service accounts");
    }
    let spec = pod.get("spec").cloned().unwrap_or_default();
    if references_secrets(&spec) {
        return Err("a mirror pod may not reference secrets");
    }
    let projections = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/projected/sources").and_then(Value::as_array))
        .flatten();
    for p in projections {
        if p.get("serviceAccountToken").is_some() {
            return Err("a mirror pod may not use ServiceAccountToken volume projections");
        }
        if p.get("clusterTrustBundle").is_some() {
            return Err("a mirror pod may not use ClusterTrustBundle volume projections");
        }
    }
    Ok(())
}

/// Whether the pod spec names a Secret anywhere (upstream's `VisitPodSecretNames`).
pub(super) fn references_secrets(spec: &Value) -> bool {
    let list = |v: &Value, field: &str| -> Vec<Value> {
        v.get(field)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    if !list(spec, "imagePullSecrets").is_empty() {
        return true;
    }
    let in_containers = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|l| list(spec, l))
        .any(|c| {
            list(&c, "envFrom")
                .iter()
                .any(|f| f.get("secretRef").is_some())
                || list(&c, "env")
                    .iter()
                    .any(|e| e.pointer("/valueFrom/secretKeyRef").is_some())
        });
    // Volume sources that carry a secret reference.
    const SECRET_PATHS: [&str; 10] = [
        "/secret",
        "/azureFile",
        "/cephfs/secretRef",
        "/cinder/secretRef",
        "/flexVolume/secretRef",
        "/iscsi/secretRef",
        "/rbd/secretRef",
        "/scaleIO/secretRef",
        "/storageos/secretRef",
        "/csi/nodePublishSecretRef",
    ];
    in_containers
        || list(spec, "volumes").iter().any(|v| {
            SECRET_PATHS.iter().any(|p| v.pointer(p).is_some())
                || v.pointer("/projected/sources")
                    .and_then(Value::as_array)
                    .is_some_and(|ss| ss.iter().any(|s| s.get("secret").is_some()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_mounted_in_every_container_once() {
        let mut pod = json!({ "spec": {
            "initContainers": [{ "name": "init" }],
            "containers": [
                { "name": "a", "volumeMounts": [{ "name": "data", "mountPath": "/data" }] },
                { "name": "own", "volumeMounts": [{ "name": "mine", "mountPath": MOUNT_PATH }] },
            ],
            "volumes": [{ "name": "data", "emptyDir": {} }],
        }});
        mount_token(&mut pod, "x2b4c");
        let mount =
            json!({ "name": "kube-api-access-x2b4c", "readOnly": true, "mountPath": MOUNT_PATH });
        let spec = &pod["spec"];
        assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(spec["containers"][0]["volumeMounts"][1], mount);
        assert_eq!(
            spec["containers"][1]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(spec["volumes"][1]["name"], "kube-api-access-x2b4c");
        assert_eq!(
            spec["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"],
            json!({ "expirationSeconds": 3607, "path": "token" })
        );

        // Admitting again (a pod that already has the volume) adds nothing.
        let before = pod.clone();
        mount_token(&mut pod, "zzzzz");
        assert_eq!(pod, before);
    }

    #[test]
    fn a_pod_without_pull_secrets_takes_the_service_accounts() {
        let sa = json!({ "imagePullSecrets": [{ "name": "registry" }] });
        let mut pod = json!({ "spec": { "containers": [] } });
        copy_image_pull_secrets(&mut pod, &sa);
        assert_eq!(
            pod["spec"]["imagePullSecrets"],
            json!([{ "name": "registry" }])
        );
        let own = json!({ "spec": { "imagePullSecrets": [{ "name": "mine" }] } });
        let mut pod = own.clone();
        copy_image_pull_secrets(&mut pod, &sa);
        assert_eq!(pod, own);
    }

    #[test]
    fn automount_follows_the_pod_then_the_service_account() {
        let sa_off = json!({ "automountServiceAccountToken": false });
        let pod = |v: Value| json!({ "spec": { "automountServiceAccountToken": v } });
        assert!(should_automount(&pod(Value::Null), &json!({})));
        assert!(!should_automount(&pod(Value::Null), &sa_off));
        assert!(should_automount(&pod(json!(true)), &sa_off));
        assert!(!should_automount(&pod(json!(false)), &json!({})));
    }

    #[test]
    fn mirror_pods_reference_nothing_the_api_guards() {
        let mirror = |spec: Value| json!({ "spec": spec });
        assert_eq!(
            check_mirror_pod(&mirror(json!({ "containers": [] }))),
            Ok(())
        );
        assert_eq!(
            check_mirror_pod(&mirror(json!({ "serviceAccountName": "default" }))),
            Err("a mirror pod may not reference service accounts")
        );
        assert_eq!(
            check_mirror_pod(&mirror(
                json!({ "volumes": [{ "name": "s", "secret": { "secretName": "x" } }] })
            )),
            Err("a mirror pod may not reference secrets")
        );
        assert_eq!(
            check_mirror_pod(&mirror(
                json!({ "containers": [{ "env": [{ "name": "A", "valueFrom": { "secretKeyRef": { "name": "c", "key": "k" } } }] }] })
            )),
            Err("a mirror pod may not reference secrets")
        );
        assert_eq!(
            check_mirror_pod(&mirror(
                json!({ "volumes": [{ "name": "t", "projected": { "sources": [{ "serviceAccountToken": { "path": "t" } }] } }] })
            )),
            Err("a mirror pod may not use ServiceAccountToken volume projections")
        );
    }
}
