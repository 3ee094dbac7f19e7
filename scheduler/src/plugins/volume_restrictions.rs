//! VolumeRestrictions: volumes that one node cannot mount twice (GCE PD and RBD/iSCSI
//! read-write, AWS EBS at all) keep a second pod using them off that node.
//!
//! ReadWriteOncePod claims need the PersistentVolumeClaim objects, which this scheduler
//! does not watch yet; pods sharing such a claim are not kept apart.

use crate::framework::types::PodVolume;
use crate::framework::{
    ClusterEvent, CycleState, NodeInfo, Plugin, PodInfo, Point, PreFilterNodes, Snapshot, Status,
};

pub const NAME: &str = "VolumeRestrictions";
pub const REASON_DISK_CONFLICT: &str = "node(s) had no available disk";

pub struct VolumeRestrictions;

fn conflicts(a: &PodVolume, b: &PodVolume) -> bool {
    use PodVolume::*;
    match (a, b) {
        (
            GcePersistentDisk {
                pd_name: x,
                read_only: rx,
            },
            GcePersistentDisk {
                pd_name: y,
                read_only: ry,
            },
        ) => x == y && !(*rx && *ry),
        (AwsElasticBlockStore { volume_id: x }, AwsElasticBlockStore { volume_id: y }) => x == y,
        (
            Rbd {
                monitors: mx,
                pool: px,
                image: ix,
                read_only: rx,
            },
            Rbd {
                monitors: my,
                pool: py,
                image: iy,
                read_only: ry,
            },
        ) => mx.iter().any(|m| my.contains(m)) && px == py && ix == iy && !(*rx && *ry),
        (
            Iscsi {
                iqn: qx,
                read_only: rx,
                ..
            },
            Iscsi {
                iqn: qy,
                read_only: ry,
                ..
            },
        ) => qx == qy && !(*rx && *ry),
        _ => false,
    }
}

impl Plugin for VolumeRestrictions {
    fn name(&self) -> &'static str {
        NAME
    }

    fn points(&self) -> &'static [Point] {
        &[Point::PreFilter, Point::Filter]
    }

    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::AssignedPodDelete]
    }

    fn pre_filter(
        &self,
        _state: &mut CycleState,
        pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (Status, PreFilterNodes) {
        let exclusive = pod
            .volumes
            .iter()
            .any(|v| !matches!(v, PodVolume::Claim(_)));
        (
            if exclusive {
                Status::success()
            } else {
                Status::skip()
            },
            None,
        )
    }

    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for mine in pod
            .volumes
            .iter()
            .filter(|v| !matches!(v, PodVolume::Claim(_)))
        {
            for other in &node.pods {
                if other.volumes.iter().any(|theirs| conflicts(mine, theirs)) {
                    return Status::unschedulable(REASON_DISK_CONFLICT);
                }
            }
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    fn with_volume(volume: serde_json::Value) -> PodInfo {
        pod(json!({"volumes": [volume], "containers": [{"name": "c"}]}))
    }

    #[test]
    fn exclusive_disks_conflict_unless_both_read_only() {
        let mut n = node(json!({"metadata": {"name": "n"}}), &[]);
        n.add_pod(std::sync::Arc::new(with_volume(
            json!({"name": "d", "gcePersistentDisk": {"pdName": "disk1", "readOnly": true}}),
        )));
        n.add_pod(std::sync::Arc::new(with_volume(
            json!({"name": "e", "awsElasticBlockStore": {"volumeID": "vol-1"}}),
        )));
        let state = CycleState::default();
        let ro = with_volume(
            json!({"name": "d", "gcePersistentDisk": {"pdName": "disk1", "readOnly": true}}),
        );
        let rw = with_volume(json!({"name": "d", "gcePersistentDisk": {"pdName": "disk1"}}));
        let ebs = with_volume(
            json!({"name": "e", "awsElasticBlockStore": {"volumeID": "vol-1", "readOnly": true}}),
        );
        assert!(VolumeRestrictions.filter(&state, &ro, &n).is_success());
        assert_eq!(
            VolumeRestrictions.filter(&state, &rw, &n),
            Status::unschedulable(REASON_DISK_CONFLICT)
        );
        assert_eq!(
            VolumeRestrictions.filter(&state, &ebs, &n),
            Status::unschedulable(REASON_DISK_CONFLICT)
        );
    }
}
