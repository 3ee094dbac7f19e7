//! Which pod to evict first (upstream `eviction/helpers.go` `rankMemoryPressure` and
//! `rankDiskPressureFunc`): pods whose usage exceeds their requests first, then lower
//! priority first, then the largest usage above requests first. Pods without stats sort
//! first, as upstream's. For memory this puts BestEffort pods (no requests) that use
//! memory ahead of Burstable ones within their requests, and those ahead of Guaranteed.

use std::cmp::Ordering;

use k8s_openapi::api::core::v1::Pod;

/// Upstream's `scheduling.SystemCriticalPriority`.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// One pod as ranking sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub uid: String,
    pub priority: i32,
    /// What the pod requests of the resource being reclaimed.
    pub request: u64,
    /// What it uses (memory working set, or ephemeral storage); None without stats.
    pub usage: Option<u64>,
}

/// The pod's requests of `resource` (`memory` or `ephemeral-storage`): the sum over its
/// containers, or the largest init container's if that is more (upstream `PodRequests`).
pub fn pod_request(pod: &Pod, resource: &str) -> u64 {
    let Some(spec) = &pod.spec else { return 0 };
    let of = |c: &k8s_openapi::api::core::v1::Container| {
        let r = c.resources.as_ref();
        r.and_then(|r| r.requests.as_ref())
            .and_then(|m| m.get(resource))
            .or_else(|| {
                r.and_then(|r| r.limits.as_ref())
                    .and_then(|m| m.get(resource))
            })
            .and_then(|q| crate::cm::parse_quantity(&q.0))
            .and_then(|n| u64::try_from(n / 1_000_000_000).ok())
            .unwrap_or(0)
    };
    let regular: u64 = spec.containers.iter().map(of).sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(of)
        .max()
        .unwrap_or(0);
    regular.max(init)
}

pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Static, mirror and system-critical pods are never evicted (upstream `IsCriticalPod`).
pub fn is_critical(pod: &Pod, is_static: bool) -> bool {
    is_static || crate::static_pods::is_mirror(pod) || priority(pod) >= SYSTEM_CRITICAL_PRIORITY
}

fn exceeds(c: &Candidate) -> bool {
    c.usage.is_none_or(|u| u > c.request)
}

fn above_request(c: &Candidate) -> i128 {
    c.usage
        .map_or(i128::MAX, |u| i128::from(u) - i128::from(c.request))
}

/// Upstream's order: exceeding requests first, then lower priority, then more usage
/// above requests.
pub fn compare(a: &Candidate, b: &Candidate) -> Ordering {
    exceeds(b)
        .cmp(&exceeds(a))
        .then(a.priority.cmp(&b.priority))
        .then(above_request(b).cmp(&above_request(a)))
}

/// Sorts candidates, the first to evict first.
pub fn rank(candidates: &mut [Candidate]) {
    candidates.sort_by(compare);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1024 * 1024;

    fn c(uid: &str, priority: i32, request: u64, usage: Option<u64>) -> Candidate {
        Candidate {
            uid: uid.into(),
            priority,
            request: request * MI,
            usage: usage.map(|u| u * MI),
        }
    }

    fn order(mut v: Vec<Candidate>) -> Vec<String> {
        rank(&mut v);
        v.into_iter().map(|c| c.uid).collect()
    }

    #[test]
    fn best_effort_then_burstable_then_guaranteed() {
        // BestEffort: no requests, some usage; Burstable: within a 64Mi request;
        // Guaranteed: within a 128Mi request.
        let ranked = order(vec![
            c("guaranteed", 0, 128, Some(1)),
            c("burstable", 0, 64, Some(1)),
            c("besteffort", 0, 0, Some(1)),
        ]);
        assert_eq!(ranked, ["besteffort", "burstable", "guaranteed"]);
    }

    #[test]
    fn exceeding_requests_then_priority_then_usage_above_requests() {
        let ranked = order(vec![
            c("within-low-priority", -10, 100, Some(50)),
            c("over-by-10-high", 1000, 10, Some(20)),
            c("over-by-10", 0, 10, Some(20)),
            c("over-by-50", 0, 10, Some(60)),
            c("no-stats", 0, 10, None),
        ]);
        assert_eq!(
            ranked,
            [
                "no-stats",
                "over-by-50",
                "over-by-10",
                "over-by-10-high",
                "within-low-priority"
            ]
        );
    }

    #[test]
    fn requests_and_criticality_from_the_spec() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "priority": 2_000_001_000,
                "initContainers": [{"name": "i", "resources": {"requests": {"memory": "200Mi"}}}],
                "containers": [
                    {"name": "a", "resources": {"requests": {"memory": "64Mi"}}},
                    {"name": "b", "resources": {"limits": {"memory": "32Mi", "ephemeral-storage": "1Gi"}}},
                    {"name": "c"}
                ]
            }
        }))
        .unwrap();
        assert_eq!(pod_request(&pod, "memory"), 200 * MI);
        assert_eq!(pod_request(&pod, "ephemeral-storage"), 1024 * MI);
        assert!(is_critical(&pod, false));
        let mut plain = pod.clone();
        plain.spec.as_mut().unwrap().priority = Some(0);
        assert!(!is_critical(&plain, false));
        assert!(is_critical(&plain, true));
    }
}
