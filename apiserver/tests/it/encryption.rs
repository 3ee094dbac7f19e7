//! Secrets at rest (`--encryption-provider-config`): what etcd holds is upstream's
//! encrypted layout, clients read plain objects, and reads survive a key rotation.

use crate::common::{wait_until, TestApi};
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::ResourceExt;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use store::Store;

const KEY1: [u8; 32] = [1; 32];
const KEY2: [u8; 32] = [2; 32];
const PASSWORD: &str = "hunter2-very-secret";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn aescbc(keys: &[(&str, &[u8])]) -> String {
    let mut s = "  - aescbc:\n      keys:\n".to_string();
    for (name, secret) in keys {
        s += &format!("      - name: {name}\n        secret: {}\n", b64(secret));
    }
    s
}

const IDENTITY: &str = "  - identity: {}\n";

/// Writes an EncryptionConfiguration for secrets with `providers` (YAML list items).
fn write_config(path: &Path, providers: &[&str]) {
    let text = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources:\n  - secrets\n  providers:\n{}",
        providers.concat()
    );
    std::fs::write(path, text).unwrap();
}

/// An apiserver reading its encryption configuration from a file the test rewrites
/// before each restart.
async fn start(providers: &[&str]) -> (TestApi, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("encryption.yaml");
    write_config(&path, providers);
    let config = path.clone();
    let api = TestApi::start_with(move |c| c.encryption_provider_config = Some(config)).await;
    (api, dir, path)
}

/// The value etcd holds for a key relative to `/registry`.
async fn raw(api: &TestApi, key: &str) -> Vec<u8> {
    let store = store::EtcdStore::connect(api.etcd.config()).await.unwrap();
    store
        .get(key)
        .await
        .unwrap()
        .expect("the key exists")
        .value
        .to_vec()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn secret(name: &str, password: &str) -> Secret {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "stringData": { "password": password },
    }))
    .unwrap()
}

fn password(s: &Secret) -> String {
    let data = s.data.as_ref().expect("data");
    String::from_utf8(data["password"].0.clone()).unwrap()
}

async fn create(secrets: &Api<Secret>, name: &str, password: &str) -> Secret {
    secrets
        .create(&PostParams::default(), &secret(name, password))
        .await
        .unwrap()
}

/// Replaces the secret with a new password (an update: the object is written anew).
async fn update(secrets: &Api<Secret>, name: &str, password: &str) -> Secret {
    let mut s = secrets.get(name).await.unwrap();
    s.data = None;
    s.string_data = Some([("password".to_string(), password.to_string())].into());
    secrets
        .replace(name, &PostParams::default(), &s)
        .await
        .unwrap()
}

/// The error of a read that must fail with 500 and upstream's "unable to transform".
async fn get_fails(secrets: &Api<Secret>, name: &str) -> String {
    match secrets.get(name).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 500, "{s:?}");
            assert_eq!(s.reason, "InternalError", "{s:?}");
            assert!(s.message.contains("unable to transform key"), "{s:?}");
            s.message
        }
        other => panic!("read of {name} did not fail with 500: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aescbc_secret_is_encrypted_in_etcd_and_plain_to_clients() {
    let (api, _dir, _) = start(&[&aescbc(&[("key1", &KEY1)])]).await;
    let client = api.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let created = create(&secrets, "db", PASSWORD).await;
    assert_eq!(password(&created), PASSWORD);

    let stored = raw(&api, "secrets/default/db").await;
    assert!(
        stored.starts_with(b"k8s:enc:aescbc:v1:key1:"),
        "{}",
        String::from_utf8_lossy(&stored)
    );
    assert!(!contains(&stored, PASSWORD.as_bytes()));
    assert!(!contains(&stored, b64(PASSWORD.as_bytes()).as_bytes()));
    assert!(!contains(&stored, b"\"kind\""));

    // Reads from etcd (get, list) and from the watch cache (resourceVersion=0).
    assert_eq!(password(&secrets.get("db").await.unwrap()), PASSWORD);
    let listed = secrets.list(&ListParams::default()).await.unwrap();
    assert_eq!(password(&listed.items[0]), PASSWORD);
    let cached = wait_until(
        Duration::from_secs(10),
        "the watch cache has the secret",
        || {
            let secrets = secrets.clone();
            async move {
                let l = secrets
                    .list(&ListParams::default().match_any())
                    .await
                    .ok()?;
                l.items.into_iter().find(|s| s.name_any() == "db")
            }
        },
    )
    .await;
    assert_eq!(password(&cached), PASSWORD);
    let yaml = api.kubectl_ok(&["get", "secret", "db", "-n", "default", "-o", "yaml"]);
    assert!(
        yaml.contains(&format!("password: {}", b64(PASSWORD.as_bytes()))),
        "{yaml}"
    );

    let metrics = api.kubectl_ok(&["get", "--raw", "/metrics"]);
    assert!(
        metrics.lines().any(|l| l
            .starts_with("apiserver_storage_transformation_operations_total{")
            && l.contains("transformation_type=\"to_storage\"")
            && l.contains("transformer_prefix=\"k8s:enc:aescbc:v1:\"")
            && l.contains("status=\"OK\"")),
        "{metrics}"
    );

    // A watch sees the update decrypted.
    let rv = created.resource_version().unwrap();
    let mut events = secrets
        .watch(&WatchParams::default().fields("metadata.name=db"), &rv)
        .await
        .unwrap()
        .boxed();
    update(&secrets, "db", "rotated-password").await;
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.try_next().await.unwrap() {
                Some(WatchEvent::Modified(s)) => return s,
                Some(_) => continue,
                None => panic!("the watch ended"),
            }
        }
    })
    .await
    .expect("a Modified event within 10s");
    assert_eq!(password(&seen), "rotated-password");

    // ConfigMaps are not in the configuration: stored as they are.
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "plain" }, "data": { "k": "v" } }))
            .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(raw(&api, "configmaps/default/plain")
        .await
        .starts_with(b"{"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_work_across_a_key_rotation() {
    let (mut api, _dir, path) = start(&[&aescbc(&[("key1", &KEY1)])]).await;
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    create(&secrets, "old", "old-password").await;
    assert!(raw(&api, "secrets/default/old")
        .await
        .starts_with(b"k8s:enc:aescbc:v1:key1:"));

    // A new key first, the old key second: old data reads, new writes use the new key.
    write_config(&path, &[&aescbc(&[("key2", &KEY2), ("key1", &KEY1)])]);
    api.restart().await;
    assert_eq!(password(&secrets.get("old").await.unwrap()), "old-password");
    assert!(raw(&api, "secrets/default/old")
        .await
        .starts_with(b"k8s:enc:aescbc:v1:key1:"));
    create(&secrets, "new", "new-password").await;
    assert!(raw(&api, "secrets/default/new")
        .await
        .starts_with(b"k8s:enc:aescbc:v1:key2:"));
    // Rewriting the old secret moves it to the new key.
    update(&secrets, "old", "old-password").await;
    assert!(raw(&api, "secrets/default/old")
        .await
        .starts_with(b"k8s:enc:aescbc:v1:key2:"));

    // The old key removed: everything still reads.
    write_config(&path, &[&aescbc(&[("key2", &KEY2)])]);
    api.restart().await;
    let list = secrets.list(&ListParams::default()).await.unwrap();
    let mut names: Vec<(String, String)> = list
        .items
        .iter()
        .map(|s| (s.name_any(), password(s)))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("new".to_string(), "new-password".to_string()),
            ("old".to_string(), "old-password".to_string())
        ]
    );

    // Back to key1 alone: data under key2 is an internal error, never garbage.
    write_config(&path, &[&aescbc(&[("key1", &KEY1)])]);
    api.restart().await;
    let message = get_fails(&secrets, "new").await;
    assert!(message.contains("no matching prefix found"), "{message}");
    assert!(
        message.contains("/registry/secrets/default/new"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secretbox_round_trip() {
    let secretbox = format!(
        "  - secretbox:\n      keys:\n      - name: box1\n        secret: {}\n",
        b64(&KEY1)
    );
    let (api, _dir, _) = start(&[&secretbox]).await;
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    create(&secrets, "boxed", PASSWORD).await;
    let stored = raw(&api, "secrets/default/boxed").await;
    assert!(stored.starts_with(b"k8s:enc:secretbox:v1:box1:"));
    assert!(!contains(&stored, b64(PASSWORD.as_bytes()).as_bytes()));
    assert_eq!(password(&secrets.get("boxed").await.unwrap()), PASSWORD);
    update(&secrets, "boxed", "second").await;
    assert_eq!(password(&secrets.get("boxed").await.unwrap()), "second");
}

/// Upstream's flows to turn encryption on and off: plain data stays readable while
/// identity is listed; identity first (with the old key after it) decrypts on rewrite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_turned_on_and_off() {
    let (mut api, _dir, path) = start(&[IDENTITY]).await;
    let secrets: Api<Secret> = Api::namespaced(api.client().await, "default");
    create(&secrets, "plain", "p0").await;
    assert!(raw(&api, "secrets/default/plain").await.starts_with(b"{"));

    // Turned on: aescbc first, identity after it reads what was written before.
    write_config(&path, &[&aescbc(&[("key1", &KEY1)]), IDENTITY]);
    api.restart().await;
    assert_eq!(password(&secrets.get("plain").await.unwrap()), "p0");
    create(&secrets, "enc", "p1").await;
    assert!(raw(&api, "secrets/default/enc")
        .await
        .starts_with(b"k8s:enc:aescbc:v1:key1:"));

    // Without identity, plain data is refused rather than taken as it is.
    write_config(&path, &[&aescbc(&[("key1", &KEY1)])]);
    api.restart().await;
    let message = get_fails(&secrets, "plain").await;
    assert!(message.contains("no matching prefix found"), "{message}");
    assert_eq!(password(&secrets.get("enc").await.unwrap()), "p1");

    // Turned off: identity first, the key after it; a rewrite stores plain data.
    write_config(&path, &[IDENTITY, &aescbc(&[("key1", &KEY1)])]);
    api.restart().await;
    assert_eq!(password(&secrets.get("enc").await.unwrap()), "p1");
    update(&secrets, "enc", "p2").await;
    let stored = raw(&api, "secrets/default/enc").await;
    assert!(
        stored.starts_with(b"{"),
        "{}",
        String::from_utf8_lossy(&stored)
    );
    assert_eq!(password(&secrets.get("enc").await.unwrap()), "p2");
}

/// A configuration the apiserver cannot use stops it at start with exit code 64 and a
/// message naming the problem, before it binds a port or dials etcd.
#[test]
fn bad_configurations_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(String, &str)> = vec![
        (
            aescbc(&[("key1", b"short")]),
            "secret is not of the expected length, got 5",
        ),
        (
            "  - aescbc:\n      keys:\n      - name: key1\n        secret: not*base64\n".into(),
            "secrets must be base64 encoded",
        ),
        (String::new(), "resources[0].providers: Required value"),
        (
            "  - aesgcm:\n      keys: []\n".into(),
            "unsupported provider \"aesgcm\"",
        ),
    ];
    let mut files: Vec<(PathBuf, &str)> = Vec::new();
    for (i, (providers, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.yaml"));
        write_config(&path, &[providers]);
        files.push((path, expected));
    }
    let unknown = dir.path().join("unknown.yaml");
    write_config(&unknown, &[IDENTITY]);
    let text = std::fs::read_to_string(&unknown)
        .unwrap()
        .replace("- secrets", "- sekrets");
    std::fs::write(&unknown, text).unwrap();
    files.push((unknown, "\"sekrets\": unknown resource"));
    files.push((
        dir.path().join("missing.yaml"),
        "error opening encryption provider configuration file",
    ));
    for (path, expected) in files {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-apiserver"))
            .arg(format!("--encryption-provider-config={}", path.display()))
            // Nothing listens here: the check comes first.
            .arg("--etcd-servers=http://127.0.0.1:1")
            .arg("--secure-port=0")
            .arg(format!("--cert-dir={}", dir.path().join("certs").display()))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{}: {stderr}", path.display());
        assert!(
            stderr.contains("--encryption-provider-config") && stderr.contains(expected),
            "{}: {stderr}\nexpected: {expected}",
            path.display()
        );
        assert!(!dir.path().join("certs").exists(), "nothing was started");
    }
}
