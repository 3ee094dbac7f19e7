//! The in-tree plugins, a file each, under their upstream names, and the default profile.

pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources_balanced_allocation;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod taint_toleration;
pub mod volume_restrictions;

#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;

use crate::framework::Plugin;

/// Plugins whose work the scheduler does itself at a fixed point, accepted in a
/// configuration so upstream files load: the queue always sorts by priority (PrioritySort),
/// gated pods always wait (SchedulingGates), binding is always `pods/binding`
/// (DefaultBinder), and DefaultPreemption is the PostFilter.
pub const BUILT_IN: &[&str] = &[
    "PrioritySort",
    "SchedulingGates",
    "DefaultBinder",
    "DefaultPreemption",
];

/// Upstream plugins that need objects this scheduler does not watch (volumes and their
/// limits). A configuration may name them; they are skipped with a log line.
pub const NOT_IMPLEMENTED: &[&str] = &[
    "NodeVolumeLimits",
    "VolumeBinding",
    "VolumeZone",
    "DynamicResources",
];

/// The default profile's plugins in upstream order, with their default score weights
/// (0 = not a score plugin).
pub const DEFAULT_PLUGINS: &[(&str, i64)] = &[
    (node_unschedulable::NAME, 0),
    (node_name::NAME, 0),
    (taint_toleration::NAME, 3),
    (node_affinity::NAME, 2),
    (node_ports::NAME, 0),
    (node_resources_fit::NAME, 1),
    (volume_restrictions::NAME, 0),
    (pod_topology_spread::NAME, 2),
    (inter_pod_affinity::NAME, 2),
    (node_resources_balanced_allocation::NAME, 1),
    (image_locality::NAME, 1),
];

/// Builds a plugin by name with its pluginConfig args.
pub fn new_plugin(name: &str, args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(match name {
        node_unschedulable::NAME => Arc::new(node_unschedulable::NodeUnschedulable),
        node_name::NAME => Arc::new(node_name::NodeName),
        taint_toleration::NAME => Arc::new(taint_toleration::TaintToleration),
        node_affinity::NAME => Arc::new(node_affinity::NodeAffinity),
        node_ports::NAME => Arc::new(node_ports::NodePorts),
        node_resources_fit::NAME => Arc::new(node_resources_fit::NodeResourcesFit::new(args)?),
        volume_restrictions::NAME => Arc::new(volume_restrictions::VolumeRestrictions),
        pod_topology_spread::NAME => Arc::new(pod_topology_spread::PodTopologySpread::new(args)?),
        inter_pod_affinity::NAME => Arc::new(inter_pod_affinity::InterPodAffinity::new(args)?),
        node_resources_balanced_allocation::NAME => Arc::new(
            node_resources_balanced_allocation::BalancedAllocation::new(args)?,
        ),
        image_locality::NAME => Arc::new(image_locality::ImageLocality),
        other => return Err(format!("plugin {other:?} does not exist")),
    })
}
