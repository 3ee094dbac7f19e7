//! The labels and annotations the kubelet puts on CRI sandboxes and containers to find
//! their pod again (upstream `kuberuntime/labels.go`, same keys, so tools like crictl show
//! the same names).

use std::collections::HashMap;

pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const CONTAINER_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const POD_TERMINATION_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
/// Whether a container is an init container (ours; upstream tells them apart by spec).
pub const CONTAINER_TYPE: &str = "io.kubernetes.container.type";

/// The identity labels of a pod's sandbox.
pub fn pod_labels(namespace: &str, name: &str, uid: &str) -> HashMap<String, String> {
    HashMap::from([
        (POD_NAME.to_owned(), name.to_owned()),
        (POD_NAMESPACE.to_owned(), namespace.to_owned()),
        (POD_UID.to_owned(), uid.to_owned()),
    ])
}
