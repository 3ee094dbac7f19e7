//! The rollout arithmetic of upstream's deployment controller, on plain numbers so it can
//! be tested without I/O: fenceposts (maxSurge/maxUnavailable), how far the new
//! ReplicaSet may grow, how far the old ones may shrink, proportional scaling, and the
//! pod-template hash that names ReplicaSets.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Upstream's `GetScaledValueFromIntOrPercent`: an int as is, a percentage of `total`
/// rounded up or down.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let Some(digits) = s.strip_suffix('%') else {
                return Err(
                    "invalid value for IntOrString: invalid type: string is not a percentage"
                        .into(),
                );
            };
            let percent: i64 = digits
                .parse()
                .map_err(|e| format!("invalid value for IntOrString: invalid value {s:?}: {e}"))?;
            let scaled = percent as f64 * f64::from(total) / 100.0;
            Ok(if round_up {
                scaled.ceil()
            } else {
                scaled.floor()
            } as i32)
        }
    }
}

/// Upstream's `ResolveFenceposts`: (maxSurge, maxUnavailable) for `desired` replicas.
/// Surge rounds up, unavailability down; if both come to zero, one pod may be
/// unavailable (validation forbids two explicit zeros, rounding can still make them).
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), String> {
    let zero = IntOrString::Int(0);
    let surge = scaled_value(max_surge.unwrap_or(&zero), desired, true)?;
    let mut unavailable = scaled_value(max_unavailable.unwrap_or(&zero), desired, false)?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

/// Upstream's `NewRSNewReplicas` for RollingUpdate: the new ReplicaSet's size, growing
/// only while all pods together stay within `desired + max_surge`.
pub fn rolling_new_replicas(
    desired: i32,
    max_surge: i32,
    total_pods: i32,
    new_replicas: i32,
) -> i32 {
    let max_total = desired + max_surge;
    if total_pods >= max_total {
        return new_replicas;
    }
    let scale_up = (max_total - total_pods).min(desired - new_replicas);
    new_replicas + scale_up
}

/// Upstream's `maxScaledDown` in `reconcileOldReplicaSets`: how many old pods may go,
/// counting the new ReplicaSet's pods that are not available yet as already unavailable.
pub fn max_scaled_down(
    all_pods: i32,
    desired: i32,
    max_unavailable: i32,
    new_replicas: i32,
    new_available: i32,
) -> i32 {
    let min_available = desired - max_unavailable;
    let new_unavailable = (new_replicas - new_available).max(0);
    all_pods - min_available - new_unavailable
}

/// An old ReplicaSet as the scale-down arithmetic sees it, oldest first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OldSize {
    pub replicas: i32,
    pub available: i32,
}

/// Upstream's `cleanupUnhealthyReplicas`: the old ReplicaSets' new sizes after removing
/// up to `max_cleanup` pods that are not available (those go without lowering
/// availability). Returns the sizes and how many were removed.
pub fn cleanup_unhealthy(olds: &[OldSize], max_cleanup: i32) -> (Vec<i32>, i32) {
    let mut total = 0;
    let mut sizes = Vec::with_capacity(olds.len());
    for old in olds {
        if total >= max_cleanup || old.replicas == 0 || old.replicas == old.available {
            sizes.push(old.replicas);
            continue;
        }
        let n = (max_cleanup - total)
            .min(old.replicas - old.available)
            .max(0);
        sizes.push(old.replicas - n);
        total += n;
    }
    (sizes, total)
}

/// Upstream's `scaleDownOldReplicaSetsForRollingUpdate`: the old ReplicaSets' new sizes
/// (oldest scaled down first) keeping `desired - max_unavailable` pods available.
pub fn rolling_scale_down(
    olds: &[i32],
    available: i32,
    desired: i32,
    max_unavailable: i32,
) -> Vec<i32> {
    let min_available = desired - max_unavailable;
    let mut left = (available - min_available).max(0);
    olds.iter()
        .map(|&replicas| {
            let n = replicas.min(left).max(0);
            left -= n;
            replicas - n
        })
        .collect()
}

/// A ReplicaSet taking part in proportional scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleSize {
    pub replicas: i32,
    /// Its `deployment.kubernetes.io/max-replicas` annotation.
    pub max_replicas: Option<i32>,
}

/// Upstream's proportional scaling (`scale` in sync.go) when a Deployment is resized
/// mid-rollout. `sets` must be ordered as upstream sorts them: by size, larger first;
/// ties newer first when growing and older first when shrinking (see [`growing`]).
/// `status_replicas` is the Deployment's `status.replicas` (the fallback estimate).
/// Returns each set's new size.
pub fn proportional_sizes(
    sets: &[ScaleSize],
    desired: i32,
    max_surge: i32,
    status_replicas: i32,
) -> Vec<i32> {
    let current: i32 = sets.iter().map(|s| s.replicas).sum();
    let allowed = if desired > 0 { desired + max_surge } else { 0 };
    let to_add = allowed - current;
    let mut added = 0;
    let mut sizes: Vec<i32> = sets
        .iter()
        .map(|s| {
            if to_add == 0 {
                return s.replicas;
            }
            let p = proportion(s, desired, max_surge, status_replicas, to_add, added);
            added += p;
            s.replicas + p
        })
        .collect();
    // Leftovers go to (or come from) the largest set.
    if let Some(first) = sizes.first_mut() {
        if to_add != 0 {
            *first = (*first + to_add - added).max(0);
        }
    }
    sizes
}

/// Whether proportional scaling grows the sets (`Some(true)`), shrinks them, or neither.
pub fn growing(sets: &[i32], desired: i32, max_surge: i32) -> Option<bool> {
    let allowed = if desired > 0 { desired + max_surge } else { 0 };
    let current: i32 = sets.iter().sum();
    match allowed.cmp(&current) {
        std::cmp::Ordering::Greater => Some(true),
        std::cmp::Ordering::Less => Some(false),
        std::cmp::Ordering::Equal => None,
    }
}

/// Upstream's `GetReplicaSetProportion`.
fn proportion(
    s: &ScaleSize,
    desired: i32,
    max_surge: i32,
    status_replicas: i32,
    to_add: i32,
    added: i32,
) -> i32 {
    if s.replicas == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = fraction(s, desired, max_surge, status_replicas);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// Upstream's `getReplicaSetFraction`: how much this set grows or shrinks so it keeps
/// its share of the Deployment's maximum size.
fn fraction(s: &ScaleSize, desired: i32, max_surge: i32, status_replicas: i32) -> i32 {
    if desired == 0 {
        return -s.replicas;
    }
    let max_now = desired + max_surge;
    let max_before = match s.max_replicas {
        Some(m) if m != 0 => m,
        // No annotation (e.g. after a rollback): the Deployment's current size.
        _ => {
            if status_replicas == 0 {
                return 0;
            }
            status_replicas
        }
    };
    let size = f64::from(s.replicas) * f64::from(max_now) / f64::from(max_before);
    // Go's math.Round: half away from zero, as f64::round.
    size.round() as i32 - s.replicas
}

/// Upstream's `ComputeHash`: FNV-32a over the pod template (here its canonical JSON:
/// fields in a fixed order, maps sorted) and the collision count, rendered as upstream's
/// `rand.SafeEncodeString` of the decimal number, e.g. `7c5ddbdf54`.
pub fn pod_template_hash(template_json: &[u8], collision_count: Option<i32>) -> String {
    let mut h = Fnv32a::new();
    h.write(template_json);
    if let Some(c) = collision_count {
        // Upstream writes an 8-byte buffer with the count in the low 4 bytes.
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&(c as u32).to_le_bytes());
        h.write(&buf);
    }
    safe_encode(&h.sum().to_string())
}

/// Upstream's `rand.SafeEncodeString`: each byte mapped onto an alphabet without vowels
/// or look-alike digits, so generated names never spell words.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

struct Fnv32a(u32);

impl Fnv32a {
    fn new() -> Fnv32a {
        Fnv32a(0x811c_9dc5)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
    fn sum(&self) -> u32 {
        self.0
    }
}

/// Upstream's revision-history bookkeeping (`SetNewReplicaSetAnnotations`): when a
/// ReplicaSet that had `old` becomes the new one again at a higher revision, `old` is
/// appended to its history, dropping the oldest entries beyond `limit` characters.
pub fn append_revision_history(history: &str, old: &str, limit: usize) -> Option<String> {
    if history.is_empty() {
        return Some(old.to_string());
    }
    let entries: Vec<&str> = history.split(',').collect();
    let mut total = history.len() + old.len() + 1;
    let mut start = 0;
    while total > limit && start < entries.len() {
        total -= entries[start].len() + 1;
        start += 1;
    }
    if total > limit {
        return None;
    }
    let mut kept: Vec<&str> = entries[start..].to_vec();
    kept.push(old);
    Some(kept.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        // 25% of 3: surge 0.75 → 1, unavailable 0.75 → 0.
        assert_eq!(
            resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 3),
            Ok((1, 0))
        );
        assert_eq!(
            resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 10),
            Ok((3, 2))
        );
        assert_eq!(
            resolve_fenceposts(Some(&IntOrString::Int(2)), Some(&IntOrString::Int(1)), 10),
            Ok((2, 1))
        );
        // Both resolve to zero: one pod may be unavailable.
        assert_eq!(
            resolve_fenceposts(Some(&pct("0%")), Some(&pct("10%")), 5),
            Ok((0, 1))
        );
        assert!(resolve_fenceposts(Some(&pct("x")), None, 5).is_err());
        assert!(resolve_fenceposts(Some(&pct("5")), None, 5).is_err());
    }

    #[test]
    fn new_replica_set_grows_within_max_surge() {
        // 3 desired, surge 1, 3 old pods: one new pod.
        assert_eq!(rolling_new_replicas(3, 1, 3, 0), 1);
        // Already at 4 pods: no growth.
        assert_eq!(rolling_new_replicas(3, 1, 4, 1), 1);
        // Old ones shrank to 1: grow to the desired count at most.
        assert_eq!(rolling_new_replicas(3, 1, 2, 1), 3);
        assert_eq!(rolling_new_replicas(10, 3, 10, 0), 3);
    }

    #[test]
    fn old_replica_sets_shrink_within_max_unavailable() {
        // 3 desired, unavailable 0: nothing goes while the new pod is not available.
        assert_eq!(max_scaled_down(4, 3, 0, 1, 0), 0);
        // Once it is, one old pod may go.
        assert_eq!(max_scaled_down(4, 3, 0, 1, 1), 1);
        assert_eq!(rolling_scale_down(&[3], 4, 3, 0), vec![2]);
        // Oldest first; never below zero; nothing when availability is at the floor.
        assert_eq!(rolling_scale_down(&[2, 3], 8, 5, 1), vec![0, 1]);
        assert_eq!(rolling_scale_down(&[2, 3], 4, 5, 1), vec![2, 3]);
        // Unavailable old pods are removed first, within the budget.
        let olds = [
            OldSize {
                replicas: 3,
                available: 1,
            },
            OldSize {
                replicas: 2,
                available: 2,
            },
            OldSize {
                replicas: 4,
                available: 0,
            },
        ];
        assert_eq!(cleanup_unhealthy(&olds, 3), (vec![1, 2, 3], 3));
        assert_eq!(cleanup_unhealthy(&olds, 0), (vec![3, 2, 4], 0));
    }

    #[test]
    fn proportional_scaling_keeps_each_sets_share() {
        // Upstream's example: 10 replicas, surge 3, mid-rollout 8 old + 5 new
        // (annotated max 13); scaled to 15 (max 18): 5 more, 3 to the larger old set.
        let sets = [
            ScaleSize {
                replicas: 8,
                max_replicas: Some(13),
            },
            ScaleSize {
                replicas: 5,
                max_replicas: Some(13),
            },
        ];
        assert_eq!(proportional_sizes(&sets, 15, 3, 13), vec![11, 7]);
        assert_eq!(growing(&[8, 5], 15, 3), Some(true));
        // Scaled down to 5 (max 8): 5 fewer.
        assert_eq!(proportional_sizes(&sets, 5, 3, 13), vec![5, 3]);
        assert_eq!(growing(&[8, 5], 5, 3), Some(false));
        // To zero: everything goes.
        assert_eq!(proportional_sizes(&sets, 0, 0, 13), vec![0, 0]);
        // No annotation: the Deployment's status size is the estimate.
        let bare = [
            ScaleSize {
                replicas: 2,
                max_replicas: None,
            },
            ScaleSize {
                replicas: 2,
                max_replicas: None,
            },
        ];
        assert_eq!(proportional_sizes(&bare, 8, 0, 4), vec![4, 4]);
    }

    #[test]
    fn template_hash_looks_like_upstreams() {
        let h = pod_template_hash(br#"{"spec":{}}"#, None);
        assert!((1..=10).contains(&h.len()), "{h}");
        assert!(h.bytes().all(|b| b"bcdf456789".contains(&b)), "{h}");
        // Stable, and changed by the collision count.
        assert_eq!(h, pod_template_hash(br#"{"spec":{}}"#, None));
        assert_ne!(h, pod_template_hash(br#"{"spec":{}}"#, Some(1)));
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
        // FNV-32a of the empty input is its offset basis.
        assert_eq!(Fnv32a::new().sum(), 2_166_136_261);
        let mut a = Fnv32a::new();
        a.write(b"a");
        assert_eq!(a.sum(), 0xe40c_292c);
    }

    #[test]
    fn revision_history_appends_within_the_limit() {
        assert_eq!(append_revision_history("", "1", 2000).as_deref(), Some("1"));
        assert_eq!(
            append_revision_history("1,3", "5", 2000).as_deref(),
            Some("1,3,5")
        );
        // Oldest entries dropped to fit.
        assert_eq!(
            append_revision_history("1,3", "5", 4).as_deref(),
            Some("3,5")
        );
        assert_eq!(append_revision_history("1", "12345", 3), None);
    }
}
