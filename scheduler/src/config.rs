//! `KubeSchedulerConfiguration` (kubescheduler.config.k8s.io/v1): profiles, their plugins
//! and weights, plugin args, backoff and percentage of nodes to score. Read strictly, as
//! upstream: an unknown field is an error.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::framework::runtime::{EnabledPlugin, Framework};
use crate::framework::Point;
use crate::plugins;

pub const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";
pub const KIND: &str = "KubeSchedulerConfiguration";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Configuration {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub parallelism: Option<i32>,
    #[serde(default)]
    pub client_connection: ClientConnection,
    pub leader_election: Option<LeaderElection>,
    pub percentage_of_nodes_to_score: Option<i32>,
    pub pod_initial_backoff_seconds: Option<i64>,
    pub pod_max_backoff_seconds: Option<i64>,
    #[serde(default)]
    pub profiles: Vec<Profile>,
    /// Accepted for compatibility; the scheduler serves /healthz and /metrics on its
    /// secure port only.
    pub health_z_bind_address: Option<String>,
    pub metrics_bind_address: Option<String>,
    pub enable_profiling: Option<bool>,
    pub enable_contention_profiling: Option<bool>,
    #[serde(default)]
    pub extenders: Vec<serde_json::Value>,
    pub delay_cache_until_active: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConnection {
    pub kubeconfig: Option<String>,
    pub accept_content_types: Option<String>,
    pub content_type: Option<String>,
    pub qps: Option<f32>,
    pub burst: Option<i32>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElection {
    pub leader_elect: Option<bool>,
    pub lease_duration: Option<String>,
    pub renew_deadline: Option<String>,
    pub retry_period: Option<String>,
    pub resource_lock: Option<String>,
    pub resource_name: Option<String>,
    pub resource_namespace: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    pub scheduler_name: Option<String>,
    pub percentage_of_nodes_to_score: Option<i32>,
    #[serde(default)]
    pub plugins: Plugins,
    #[serde(default)]
    pub plugin_config: Vec<PluginConfig>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plugins {
    pub pre_enqueue: Option<PluginSet>,
    pub queue_sort: Option<PluginSet>,
    pub pre_filter: Option<PluginSet>,
    pub filter: Option<PluginSet>,
    pub post_filter: Option<PluginSet>,
    pub pre_score: Option<PluginSet>,
    pub score: Option<PluginSet>,
    pub reserve: Option<PluginSet>,
    pub permit: Option<PluginSet>,
    pub pre_bind: Option<PluginSet>,
    pub bind: Option<PluginSet>,
    pub post_bind: Option<PluginSet>,
    pub multi_point: Option<PluginSet>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSet {
    #[serde(default)]
    pub enabled: Vec<PluginRef>,
    #[serde(default)]
    pub disabled: Vec<PluginRef>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginRef {
    pub name: String,
    pub weight: Option<i64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginConfig {
    pub name: String,
    pub args: Option<serde_json::Value>,
}

impl Configuration {
    pub fn load(path: &Path) -> Result<Configuration, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("failed to read config file {}: {e}", path.display()))?;
        Configuration::parse(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Configuration, String> {
        let cfg: Configuration = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        match (cfg.api_version.as_deref(), cfg.kind.as_deref()) {
            (Some(API_VERSION), Some(KIND)) => {}
            (v, k) => {
                return Err(format!(
                    "no kind {:?} is registered for version {:?}: expected apiVersion {API_VERSION} and kind {KIND}",
                    k.unwrap_or(""),
                    v.unwrap_or("")
                ))
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let check_pct = |field: &str, v: Option<i32>| match v {
            Some(p) if !(0..=100).contains(&p) => Err(format!(
                "{field}: Invalid value: {p}: not in valid range [0-100]"
            )),
            _ => Ok(()),
        };
        check_pct(
            "percentageOfNodesToScore",
            self.percentage_of_nodes_to_score,
        )?;
        if let Some(s) = self.pod_initial_backoff_seconds {
            if s <= 0 {
                return Err(format!(
                    "podInitialBackoffSeconds: Invalid value: {s}: must be greater than 0"
                ));
            }
        }
        if self.pod_max_backoff_seconds < self.pod_initial_backoff_seconds
            && self.pod_max_backoff_seconds.is_some()
        {
            return Err("podMaxBackoffSeconds: Invalid value: must be greater than or equal to PodInitialBackoffSeconds".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.profiles.iter().enumerate() {
            let name = p
                .scheduler_name
                .clone()
                .unwrap_or_else(|| crate::DEFAULT_SCHEDULER_NAME.into());
            if !names.insert(name.clone()) {
                return Err(format!(
                    "profiles[{i}].schedulerName: Duplicate value: {name:?}"
                ));
            }
            check_pct(
                &format!("profiles[{i}].percentageOfNodesToScore"),
                p.percentage_of_nodes_to_score,
            )?;
        }
        Ok(())
    }

    pub fn initial_backoff(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.pod_initial_backoff_seconds.unwrap_or(1) as u64)
    }

    pub fn max_backoff(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.pod_max_backoff_seconds.unwrap_or(10) as u64)
    }

    /// One framework per profile (the default profile if none is configured).
    pub fn frameworks(&self) -> Result<Vec<Framework>, String> {
        let default_profile = [Profile::default()];
        let profiles: &[Profile] = if self.profiles.is_empty() {
            &default_profile
        } else {
            &self.profiles
        };
        profiles
            .iter()
            .enumerate()
            .map(|(i, p)| {
                build_profile(p, self.percentage_of_nodes_to_score.unwrap_or(0))
                    .map_err(|e| format!("profiles[{i}]: {e}"))
            })
            .collect()
    }
}

/// Applies a plugin set to an ordered list of (name, weight): `*` in disabled removes the
/// defaults, enabled names are appended (or re-weighted).
fn apply_set(
    list: &mut Vec<(String, i64)>,
    set: Option<&PluginSet>,
    default_weight: impl Fn(&str) -> i64,
) {
    let Some(set) = set else {
        return;
    };
    for d in &set.disabled {
        if d.name == "*" {
            list.clear();
        } else {
            list.retain(|(n, _)| *n != d.name);
        }
    }
    for e in &set.enabled {
        let weight = e.weight.unwrap_or_else(|| default_weight(&e.name));
        match list.iter_mut().find(|(n, _)| *n == e.name) {
            Some(entry) => entry.1 = weight,
            None => list.push((e.name.clone(), weight)),
        }
    }
}

fn build_profile(p: &Profile, global_pct: i32) -> Result<Framework, String> {
    let default_weight = |name: &str| {
        plugins::DEFAULT_PLUGINS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, w)| (*w).max(1))
            .unwrap_or(1)
    };
    // Multi-point first: the defaults, then the profile's multiPoint set.
    let mut multi: Vec<(String, i64)> = plugins::DEFAULT_PLUGINS
        .iter()
        .map(|(n, w)| (n.to_string(), *w))
        .collect();
    multi.extend(
        [
            "DefaultPreemption",
            "PrioritySort",
            "SchedulingGates",
            "DefaultBinder",
        ]
        .map(|n| (n.to_string(), 0)),
    );
    apply_set(&mut multi, p.plugins.multi_point.as_ref(), default_weight);

    let args: HashMap<&str, &serde_json::Value> = p
        .plugin_config
        .iter()
        .filter_map(|c| c.args.as_ref().map(|a| (c.name.as_str(), a)))
        .collect();
    for c in &p.plugin_config {
        if !plugins::DEFAULT_PLUGINS.iter().any(|(n, _)| *n == c.name)
            && !plugins::BUILT_IN.contains(&c.name.as_str())
        {
            return Err(format!(
                "pluginConfig: Invalid value: {:?}: no plugin registered with that name",
                c.name
            ));
        }
    }

    // Per point: start from the multi-point list (plugins that implement that point), then
    // apply that point's own set.
    let point_sets: [(Point, Option<&PluginSet>); 5] = [
        (Point::PreFilter, p.plugins.pre_filter.as_ref()),
        (Point::Filter, p.plugins.filter.as_ref()),
        (Point::PostFilter, p.plugins.post_filter.as_ref()),
        (Point::PreScore, p.plugins.pre_score.as_ref()),
        (Point::Score, p.plugins.score.as_ref()),
    ];
    let mut instances: HashMap<String, Arc<dyn crate::framework::Plugin>> = HashMap::new();
    let mut enabled: Vec<EnabledPlugin> = Vec::new();
    let mut preemption = false;
    for (point, set) in point_sets {
        let mut list: Vec<(String, i64)> = Vec::new();
        for (name, weight) in &multi {
            if plugins::BUILT_IN.contains(&name.as_str()) {
                if name == "DefaultPreemption" && point == Point::PostFilter {
                    list.push((name.clone(), 0));
                }
                continue;
            }
            if plugins::NOT_IMPLEMENTED.contains(&name.as_str()) {
                continue;
            }
            let plugin = match instances.get(name) {
                Some(p) => p.clone(),
                None => {
                    let plugin = plugins::new_plugin(name, args.get(name.as_str()).copied())?;
                    instances.insert(name.clone(), plugin.clone());
                    plugin
                }
            };
            if plugin.points().contains(&point) {
                list.push((name.clone(), *weight));
            }
        }
        apply_set(&mut list, set, default_weight);
        for (name, weight) in list {
            if point == Point::PostFilter {
                if name == "DefaultPreemption" {
                    preemption = true;
                    continue;
                }
                return Err(format!(
                    "plugins.postFilter: Invalid value: {name:?}: not a PostFilter plugin"
                ));
            }
            if plugins::NOT_IMPLEMENTED.contains(&name.as_str()) {
                tracing::warn!(plugin = %name, "plugin is not implemented by pikube's scheduler; skipped");
                continue;
            }
            if plugins::BUILT_IN.contains(&name.as_str()) {
                continue;
            }
            let plugin = match instances.get(&name) {
                Some(p) => p.clone(),
                None => {
                    let plugin = plugins::new_plugin(&name, args.get(name.as_str()).copied())?;
                    instances.insert(name.clone(), plugin.clone());
                    plugin
                }
            };
            if !plugin.points().contains(&point) {
                return Err(format!("plugin {name:?} does not extend {point:?} plugin"));
            }
            if point == Point::Score && !(1..=100).contains(&weight) && weight != 0 {
                return Err(format!("plugins.score.enabled[{name}].weight: Invalid value: {weight}: must be in the range [1, 100]"));
            }
            let weight = if point == Point::Score && weight == 0 {
                default_weight(&name)
            } else {
                weight
            };
            enabled.push(EnabledPlugin {
                point,
                plugin,
                weight,
            });
        }
    }
    Ok(Framework::new(
        p.scheduler_name
            .clone()
            .unwrap_or_else(|| crate::DEFAULT_SCHEDULER_NAME.into()),
        enabled,
        preemption,
        p.percentage_of_nodes_to_score.unwrap_or(global_pct),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<Configuration, String> {
        Configuration::parse(&format!("apiVersion: {API_VERSION}\nkind: {KIND}\n{extra}"))
    }

    #[test]
    fn the_default_profile_has_upstream_plugins_and_weights() {
        let fwks = parse("").unwrap().frameworks().unwrap();
        assert_eq!(fwks.len(), 1);
        assert_eq!(fwks[0].scheduler_name, "default-scheduler");
        assert_eq!(
            fwks[0].describe(),
            "preFilter=[NodeAffinity,NodePorts,VolumeRestrictions,PodTopologySpread,InterPodAffinity] \
             filter=[NodeUnschedulable,NodeName,TaintToleration,NodeAffinity,NodePorts,NodeResourcesFit,VolumeRestrictions,PodTopologySpread,InterPodAffinity] \
             preScore=[PodTopologySpread,InterPodAffinity,ImageLocality] \
             score=[TaintToleration=3,NodeAffinity=2,NodeResourcesFit=1,PodTopologySpread=2,InterPodAffinity=2,NodeResourcesBalancedAllocation=1,ImageLocality=1] \
             preemption=true"
        );
    }

    #[test]
    fn profiles_reweight_disable_and_configure_plugins() {
        let cfg = parse(
            r#"
profiles:
- schedulerName: packer
  plugins:
    score:
      disabled: [{name: "*"}]
      enabled: [{name: NodeResourcesFit, weight: 5}]
    postFilter:
      disabled: [{name: DefaultPreemption}]
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: MostAllocated}}
- schedulerName: default-scheduler
"#,
        )
        .unwrap();
        let fwks = cfg.frameworks().unwrap();
        assert_eq!(fwks[0].scheduler_name, "packer");
        assert!(fwks[0]
            .describe()
            .contains("score=[NodeResourcesFit=5] preemption=false"));
        assert!(fwks[1].describe().ends_with("preemption=true"));
    }

    #[test]
    fn bad_files_get_clear_errors() {
        assert!(Configuration::parse("kind: Foo")
            .unwrap_err()
            .contains("expected apiVersion"));
        assert!(parse("bogus: 1")
            .unwrap_err()
            .contains("unknown field `bogus`"));
        assert!(parse("percentageOfNodesToScore: 101")
            .unwrap_err()
            .contains("not in valid range"));
        assert!(parse("profiles: [{schedulerName: a}, {schedulerName: a}]")
            .unwrap_err()
            .contains("Duplicate"));
        let unknown = parse("profiles: [{plugins: {score: {enabled: [{name: Nope}]}}}]").unwrap();
        assert!(unknown
            .frameworks()
            .unwrap_err()
            .contains("\"Nope\" does not exist"));
        let bad_args = parse("profiles: [{pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: X}}}]}]").unwrap();
        assert!(bad_args
            .frameworks()
            .unwrap_err()
            .contains("Unsupported value"));
    }
}
