//! Which admission plugins run (`--enable-admission-plugins`, `--disable-admission-plugins`)
//! and the plugins' own flags, validated before the apiserver starts.

use std::collections::BTreeSet;

/// The admission plugins pikube implements, in upstream's order (`AllOrderedPlugins`),
/// which is the order they run in within each phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AdmissionPlugin {
    NamespaceLifecycle,
    LimitRanger,
    ServiceAccount,
    NodeRestriction,
    PodSecurity,
    Priority,
    DefaultTolerationSeconds,
    ResourceQuota,
}

impl AdmissionPlugin {
    pub const ALL: [AdmissionPlugin; 8] = [
        Self::NamespaceLifecycle,
        Self::LimitRanger,
        Self::ServiceAccount,
        Self::NodeRestriction,
        Self::PodSecurity,
        Self::Priority,
        Self::DefaultTolerationSeconds,
        Self::ResourceQuota,
    ];

    /// Upstream's name of the plugin, as the flags spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::NamespaceLifecycle => "NamespaceLifecycle",
            Self::LimitRanger => "LimitRanger",
            Self::ServiceAccount => "ServiceAccount",
            Self::NodeRestriction => "NodeRestriction",
            Self::PodSecurity => "PodSecurity",
            Self::Priority => "Priority",
            Self::DefaultTolerationSeconds => "DefaultTolerationSeconds",
            Self::ResourceQuota => "ResourceQuota",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Plugins upstream knows that pikube does not implement: naming one in
/// `--disable-admission-plugins` is accepted (there is nothing to turn off), enabling one
/// is refused rather than silently ignored.
const UPSTREAM_ONLY: &[&str] = &[
    "AlwaysAdmit",
    "AlwaysDeny",
    "AlwaysPullImages",
    "CertificateApproval",
    "CertificateSigning",
    "CertificateSubjectRestriction",
    "ClusterTrustBundleAttest",
    "DefaultIngressClass",
    "DefaultStorageClass",
    "DenyServiceExternalIPs",
    "EventRateLimit",
    "ExtendedResourceToleration",
    "ImagePolicyWebhook",
    "LimitPodHardAntiAffinityTopology",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionWebhook",
    "NamespaceAutoProvision",
    "NamespaceExists",
    "OwnerReferencesPermissionEnforcement",
    "PersistentVolumeClaimResize",
    "PersistentVolumeLabel",
    "PodNodeSelector",
    "PodTolerationRestriction",
    "RuntimeClass",
    "StorageObjectInUseProtection",
    "TaintNodesByCondition",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionWebhook",
];

/// A bad admission flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmissionConfigError {
    #[error("{flag} plugin {name:?} is unknown")]
    Unknown { flag: &'static str, name: String },
    #[error("enable-admission-plugins plugin {0:?} is not implemented by pikube")]
    NotImplemented(String),
    #[error("{0:?} are both in enable-admission-plugins and disable-admission-plugins")]
    Both(Vec<String>),
    #[error("--{0} must not be negative")]
    NegativeSeconds(&'static str),
}

/// What admission does, from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    pub enabled: BTreeSet<AdmissionPlugin>,
    /// `--default-not-ready-toleration-seconds` (DefaultTolerationSeconds).
    pub default_not_ready_toleration_seconds: i64,
    /// `--default-unreachable-toleration-seconds` (DefaultTolerationSeconds).
    pub default_unreachable_toleration_seconds: i64,
}

/// Every plugin pikube implements is on unless disabled: they are upstream's default-on
/// plugins, and NodeRestriction, which upstream leaves to the installer (kubeadm turns it
/// on) and pikube has always enforced, so an upgrade does not silently widen what a
/// kubelet may write.
impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            enabled: AdmissionPlugin::ALL.into_iter().collect(),
            default_not_ready_toleration_seconds: 300,
            default_unreachable_toleration_seconds: 300,
        }
    }
}

impl AdmissionConfig {
    pub fn is_enabled(&self, plugin: AdmissionPlugin) -> bool {
        self.enabled.contains(&plugin)
    }

    /// The default set, plus `enable`, minus `disable`, as upstream combines the flags.
    pub fn from_flags(
        enable: &[String],
        disable: &[String],
        not_ready_seconds: i64,
        unreachable_seconds: i64,
    ) -> Result<Self, AdmissionConfigError> {
        let enable: Vec<&str> = enable
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        let disable: Vec<&str> = disable
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        for (flag, names) in [
            ("enable-admission-plugins", &enable),
            ("disable-admission-plugins", &disable),
        ] {
            if let Some(bad) = names
                .iter()
                .find(|n| AdmissionPlugin::from_name(n).is_none() && !UPSTREAM_ONLY.contains(n))
            {
                return Err(AdmissionConfigError::Unknown {
                    flag,
                    name: bad.to_string(),
                });
            }
        }
        if let Some(bad) = enable.iter().find(|n| UPSTREAM_ONLY.contains(n)) {
            return Err(AdmissionConfigError::NotImplemented(bad.to_string()));
        }
        let both: Vec<String> = enable
            .iter()
            .filter(|n| disable.contains(n))
            .map(|n| n.to_string())
            .collect();
        if !both.is_empty() {
            return Err(AdmissionConfigError::Both(both));
        }
        if not_ready_seconds < 0 {
            return Err(AdmissionConfigError::NegativeSeconds(
                "default-not-ready-toleration-seconds",
            ));
        }
        if unreachable_seconds < 0 {
            return Err(AdmissionConfigError::NegativeSeconds(
                "default-unreachable-toleration-seconds",
            ));
        }
        let mut config = AdmissionConfig {
            default_not_ready_toleration_seconds: not_ready_seconds,
            default_unreachable_toleration_seconds: unreachable_seconds,
            ..Default::default()
        };
        config
            .enabled
            .extend(enable.iter().filter_map(|n| AdmissionPlugin::from_name(n)));
        for p in disable.iter().filter_map(|n| AdmissionPlugin::from_name(n)) {
            config.enabled.remove(&p);
        }
        Ok(config)
    }

    /// This set without `plugins`.
    pub fn without(mut self, plugins: &[AdmissionPlugin]) -> Self {
        for p in plugins {
            self.enabled.remove(p);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(enable: &[&str], disable: &[&str]) -> Result<AdmissionConfig, AdmissionConfigError> {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        AdmissionConfig::from_flags(&v(enable), &v(disable), 300, 300)
    }

    #[test]
    fn the_flags_combine_with_the_default_set() {
        let all = flags(&[], &[]).unwrap();
        assert_eq!(all.enabled.len(), AdmissionPlugin::ALL.len());
        let c = flags(
            &["NodeRestriction"],
            &["ServiceAccount", "StorageObjectInUseProtection"],
        )
        .unwrap();
        assert!(c.is_enabled(AdmissionPlugin::NodeRestriction));
        assert!(!c.is_enabled(AdmissionPlugin::ServiceAccount));
        assert!(c.is_enabled(AdmissionPlugin::PodSecurity));
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(
            flags(&["PodSecurityPolicy"], &[]).unwrap_err().to_string(),
            "enable-admission-plugins plugin \"PodSecurityPolicy\" is unknown"
        );
        assert_eq!(
            flags(&[], &["Nope"]).unwrap_err().to_string(),
            "disable-admission-plugins plugin \"Nope\" is unknown"
        );
        assert_eq!(
            flags(&["AlwaysPullImages"], &[]).unwrap_err(),
            AdmissionConfigError::NotImplemented("AlwaysPullImages".into())
        );
        assert_eq!(
            flags(&["Priority"], &["Priority"]).unwrap_err().to_string(),
            "[\"Priority\"] are both in enable-admission-plugins and disable-admission-plugins"
        );
        assert!(AdmissionConfig::from_flags(&[], &[], -1, 300).is_err());
    }
}
