//! Wire formats of the built-in API beyond JSON: the per-message schema tables (JSON names,
//! protobuf tags and types, strategic-merge-patch metadata) and the protobuf ⇄ JSON codec.
//!
//! The tables (`generated.rs`, written by `cargo run -p codegen`) hold one [`Message`] per
//! protobuf message of k8s-pb's `api` and `apimachinery` modules that Kubernetes 1.33's
//! OpenAPI knows, named by its OpenAPI definition (`io.k8s.api.core.v1.PodSpec`). A few
//! messages without a definition of their own are included under the same naming scheme,
//! because objects need them:
//! - list kinds (`io.k8s.api.core.v1.PodList`);
//! - messages Go inlines into a parent (`io.k8s.api.core.v1.VolumeSource` into `Volume`,
//!   `ProbeHandler` into `Probe`), reached through fields with `inline` set;
//! - `+protobuf.nullable` list wrappers (`meta.v1.Verbs`, `authentication.v1.ExtraValue`) and
//!   `meta.v1.Duration`, marked [`Special`];
//! - `meta.v1.PartialObjectMetadata(List)`, `meta.v1.GroupVersionKind` and the
//!   `apidiscovery.v2` documents.
//!
//! Fields k8s-pb has but Kubernetes 1.33 does not are left out, so their tags are skipped
//! as unknown, as a 1.33 apiserver skips them.

mod generated;
mod go;
pub mod protobuf;
mod schema;

pub use protobuf::{decode, definition_for, encode, encode_watch_event, ProtobufError};
pub use schema::{Field, FieldType, Message, Special};

/// The message with this OpenAPI definition name, e.g. `io.k8s.api.core.v1.PodSpec`.
pub fn message(name: &str) -> Option<&'static Message> {
    generated::MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .ok()
        .map(|i| &generated::MESSAGES[i])
}

/// Every message of the built-in API, sorted by name.
pub fn messages() -> &'static [Message] {
    generated::MESSAGES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_sorted_and_unique() {
        for pair in messages().windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} then {}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn every_referenced_message_exists() {
        for m in messages() {
            for f in m.fields {
                if let FieldType::Message(name) = f.ty.value() {
                    assert!(message(name).is_some(), "{}.{} -> {name}", m.name, f.json);
                }
            }
        }
    }

    #[test]
    fn pod_spec_fields_carry_json_names_and_patch_metadata() {
        let spec = message("io.k8s.api.core.v1.PodSpec").expect("PodSpec");
        let host_ipc = spec.field("hostIPC").expect("hostIPC");
        assert_eq!((host_ipc.tag, host_ipc.ty), (13, FieldType::Bool));
        let containers = spec.field("containers").expect("containers");
        assert!(containers.repeated && containers.required);
        assert_eq!(containers.patch_strategy, Some("merge"));
        assert_eq!(containers.patch_merge_key, Some("name"));
        assert_eq!(containers.list_type, Some("map"));
        assert_eq!(containers.list_map_keys, &["name"]);
        assert_eq!(
            containers.ty,
            FieldType::Message("io.k8s.api.core.v1.Container")
        );
        let volumes = spec.field("volumes").expect("volumes");
        assert_eq!(volumes.patch_strategy, Some("merge,retainKeys"));
        let node_selector = spec.field("nodeSelector").expect("nodeSelector");
        assert_eq!(
            node_selector.ty,
            FieldType::Map {
                key: &FieldType::String,
                value: &FieldType::String
            }
        );
    }

    #[test]
    fn inlined_messages_are_looked_through() {
        let volume = message("io.k8s.api.core.v1.Volume").expect("Volume");
        let config_map = volume.field("configMap").expect("configMap");
        assert_eq!(
            config_map.ty,
            FieldType::Message("io.k8s.api.core.v1.ConfigMapVolumeSource")
        );
        let probe = message("io.k8s.api.core.v1.Probe").expect("Probe");
        assert!(probe.field("httpGet").is_some());
    }

    #[test]
    fn special_types_are_marked() {
        for (name, special) in [
            ("io.k8s.apimachinery.pkg.apis.meta.v1.Time", Special::Time),
            (
                "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime",
                Special::MicroTime,
            ),
            (
                "io.k8s.apimachinery.pkg.api.resource.Quantity",
                Special::Quantity,
            ),
            (
                "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
                Special::IntOrString,
            ),
            (
                "io.k8s.apimachinery.pkg.runtime.RawExtension",
                Special::RawExtension,
            ),
            (
                "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
                Special::FieldsV1,
            ),
            (
                "io.k8s.apimachinery.pkg.apis.meta.v1.Verbs",
                Special::ListWrapper,
            ),
        ] {
            assert_eq!(
                message(name).map(|m| m.special),
                Some(Some(special)),
                "{name}"
            );
        }
        let secret = message("io.k8s.api.core.v1.Secret").expect("Secret");
        let data = secret.field("data").expect("data");
        assert_eq!(data.ty.value(), &FieldType::Bytes);
        assert!(message("io.k8s.api.core.v1.PodList").is_some());
    }
}
