//! The files of configMap, secret, downwardAPI and projected volumes (upstream's
//! `configmap`, `secret`, `downwardapi` and `projected` plugins): keys or listed items
//! with their modes (`defaultMode`, 0644 unless set; an item's `mode` wins), `optional`
//! sources that may be missing, the pod's fsGroup as the files' group, and projected
//! `serviceAccountToken` files from the [`TokenManager`](super::token::TokenManager).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, Secret,
};
use kube::api::Api;

use super::atomic_writer::{validate_path, FileProjection, Payload};
use super::cache::ObjectCache;
use super::token::{TokenManager, TokenSpec};
use super::Error;
use crate::kuberuntime::container::{field_value, PodFields};

/// Upstream's default file mode of these volumes.
pub const DEFAULT_MODE: i32 = 0o644;
/// Upstream's default lifetime of a projected token.
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// Who the files belong to: the pod's fsGroup (group), and for tokens its runAsUser.
#[derive(Clone, Copy, Debug, Default)]
pub struct Owner {
    pub fs_group: Option<u32>,
    pub run_as_user: Option<u32>,
}

impl Owner {
    pub fn of(pod: &Pod) -> Owner {
        let sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        let id = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        Owner {
            fs_group: id(sc.and_then(|s| s.fs_group)),
            run_as_user: id(sc.and_then(|s| s.run_as_user)),
        }
    }

    fn file(&self, data: Vec<u8>, mode: i32) -> FileProjection {
        let mut mode = u32::try_from(mode).unwrap_or(0o644) & 0o777;
        if self.fs_group.is_some() {
            // The group may read, as upstream's SetVolumeOwnership.
            mode |= 0o440;
        }
        FileProjection {
            data,
            mode,
            uid: None,
            gid: self.fs_group,
        }
    }
}

/// The data of a ConfigMap (`data` and `binaryData`); `None` when it does not exist.
pub async fn config_map(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let found = api
        .get_opt(name)
        .await
        .map_err(|e| format!("reading configmap {name:?}: {e}"))?;
    Ok(found.map(|cm| {
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(
            cm.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
        data
    }))
}

/// The data of a Secret; `None` when it does not exist.
pub async fn secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let found = api
        .get_opt(name)
        .await
        .map_err(|e| format!("reading secret {name:?}: {e}"))?;
    Ok(found.map(|s| {
        let mut data: BTreeMap<String, Vec<u8>> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        data.extend(
            s.string_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes())),
        );
        data
    }))
}

/// Where the files' data comes from.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub client: &'a kube::Client,
    pub objects: &'a ObjectCache,
    pub tokens: &'a TokenManager,
    /// Read ConfigMaps and Secrets past the cache (a pod's first setup).
    pub fresh: bool,
}

/// Which kind of object keys come from, for upstream's messages.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    ConfigMap,
    Secret,
}

/// The files of an object's keys: all of them, or the listed items at their paths. A
/// listed key that is missing fails unless the source is optional.
pub fn key_payload(
    source: Source,
    name: &str,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
    owner: Owner,
) -> Result<Payload, Error> {
    let Some(data) = data else {
        if optional {
            return Ok(Payload::new());
        }
        return Err(match source {
            Source::ConfigMap => format!("configmap \"{name}\" not found"),
            Source::Secret => format!("secret \"{name}\" not found"),
        });
    };
    let mut out = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                out.insert(k.clone(), owner.file(v.clone(), default_mode));
            }
        }
        Some(items) => {
            for i in items {
                validate_path(&i.path)?;
                let Some(value) = data.get(&i.key) else {
                    if optional {
                        continue;
                    }
                    return Err(match source {
                        Source::ConfigMap => {
                            format!("configmap references non-existent config key: {}", i.key)
                        }
                        Source::Secret => {
                            format!("secret references non-existent secret key: {}", i.key)
                        }
                    });
                };
                out.insert(
                    i.path.clone(),
                    owner.file(value.clone(), i.mode.unwrap_or(default_mode)),
                );
            }
        }
    }
    Ok(out)
}

/// The files of downwardAPI items (fieldRef; resourceFieldRef is not supported yet).
pub fn downward_payload(
    pod: &Pod,
    fields: &PodFields,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
    owner: Owner,
) -> Result<Payload, Error> {
    let mut out = Payload::new();
    for item in items {
        validate_path(&item.path)?;
        let Some(f) = &item.field_ref else { continue };
        let value = field_value(pod, &f.field_path, fields).unwrap_or_default();
        out.insert(
            item.path.clone(),
            owner.file(value.into_bytes(), item.mode.unwrap_or(default_mode)),
        );
    }
    Ok(out)
}

/// The files of a projected volume, and when its tokens should be refreshed.
pub async fn projected_payload(
    sources: &Sources<'_>,
    pod: &Pod,
    fields: &PodFields,
    source: &ProjectedVolumeSource,
) -> Result<(Payload, Option<Timestamp>), Error> {
    let Sources {
        client,
        objects,
        tokens,
        fresh,
    } = *sources;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let owner = Owner::of(pod);
    let default_mode = source.default_mode.unwrap_or(DEFAULT_MODE);
    let mut out = Payload::new();
    let mut refresh: Option<Timestamp> = None;
    for s in source.sources.iter().flatten() {
        if let Some(c) = &s.config_map {
            let data = objects
                .get(client, Source::ConfigMap, namespace, &c.name, fresh)
                .await?;
            out.extend(key_payload(
                Source::ConfigMap,
                &c.name,
                data.as_deref(),
                c.items.as_deref(),
                default_mode,
                c.optional.unwrap_or(false),
                owner,
            )?);
        } else if let Some(sec) = &s.secret {
            let data = objects
                .get(client, Source::Secret, namespace, &sec.name, fresh)
                .await?;
            out.extend(key_payload(
                Source::Secret,
                &sec.name,
                data.as_deref(),
                sec.items.as_deref(),
                default_mode,
                sec.optional.unwrap_or(false),
                owner,
            )?);
        } else if let Some(d) = &s.downward_api {
            out.extend(downward_payload(
                pod,
                fields,
                d.items.as_deref().unwrap_or_default(),
                default_mode,
                owner,
            )?);
        } else if let Some(t) = &s.service_account_token {
            validate_path(&t.path)?;
            let spec = pod.spec.as_ref();
            let service_account = spec
                .and_then(|s| s.service_account_name.as_deref())
                .or_else(|| spec.and_then(|s| s.service_account.as_deref()))
                .filter(|s| !s.is_empty())
                .unwrap_or("default");
            let (token, at) = tokens
                .token(&TokenSpec {
                    namespace,
                    service_account,
                    pod_name: pod.metadata.name.as_deref().unwrap_or_default(),
                    pod_uid: pod.metadata.uid.as_deref().unwrap_or_default(),
                    audience: t.audience.as_deref().unwrap_or_default(),
                    expiration_seconds: t.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS),
                })
                .await?;
            refresh = Some(refresh.map_or(at, |r| r.min(at)));
            let mut file = owner.file(token.into_bytes(), default_mode);
            // Readable by the pod's user only, as upstream does when it knows the user.
            if owner.run_as_user.is_some() && owner.fs_group.is_none() {
                file.uid = owner.run_as_user;
                file.mode = 0o600;
            } else if owner.fs_group.is_some() {
                file.mode = 0o600 | 0o040;
            }
            out.insert(t.path.clone(), file);
        } else {
            return Err("unsupported projected volume source (clusterTrustBundle?)".into());
        }
    }
    Ok((out, refresh))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("a".to_owned(), b"1".to_vec()),
            ("b".to_owned(), b"2".to_vec()),
        ])
    }

    #[test]
    fn keys_items_modes_and_optional() {
        let owner = Owner::default();
        let all = key_payload(
            Source::ConfigMap,
            "cm",
            Some(&data()),
            None,
            0o644,
            false,
            owner,
        )
        .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all["a"].mode, 0o644);
        let items = [KeyToPath {
            key: "b".into(),
            path: "dir/b.txt".into(),
            mode: Some(0o400),
        }];
        let some = key_payload(
            Source::Secret,
            "s",
            Some(&data()),
            Some(&items),
            0o644,
            false,
            owner,
        )
        .unwrap();
        assert_eq!(some.keys().collect::<Vec<_>>(), ["dir/b.txt"]);
        assert_eq!(some["dir/b.txt"].mode, 0o400);
        let missing = [KeyToPath {
            key: "zz".into(),
            path: "zz".into(),
            mode: None,
        }];
        let e = key_payload(
            Source::ConfigMap,
            "cm",
            Some(&data()),
            Some(&missing),
            0o644,
            false,
            owner,
        )
        .unwrap_err();
        assert_eq!(e, "configmap references non-existent config key: zz");
        assert!(key_payload(
            Source::ConfigMap,
            "cm",
            Some(&data()),
            Some(&missing),
            0o644,
            true,
            owner
        )
        .unwrap()
        .is_empty());
        assert_eq!(
            key_payload(Source::Secret, "s", None, None, 0o644, false, owner).unwrap_err(),
            "secret \"s\" not found"
        );
        assert!(
            key_payload(Source::Secret, "s", None, None, 0o644, true, owner)
                .unwrap()
                .is_empty()
        );
        // fsGroup: the files' group, which may read them.
        let grouped = Owner {
            fs_group: Some(2000),
            run_as_user: None,
        };
        let p = key_payload(
            Source::Secret,
            "s",
            Some(&data()),
            None,
            0o400,
            false,
            grouped,
        )
        .unwrap();
        assert_eq!((p["a"].mode, p["a"].gid), (0o440, Some(2000)));
    }
}
