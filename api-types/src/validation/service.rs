//! Service validation (upstream `ValidateService`, `ValidateServiceUpdate`).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use serde_json::{json, Value};

use super::field::{duplicate, forbidden, invalid, not_supported, required, FieldError, Path};
use super::meta::{labels, name_errors};
use super::names::{
    is_dns1123_label, is_dns1123_subdomain, is_qualified_name, is_valid_cidr, is_valid_ip,
    is_valid_port_num, parse_ip_sloppy,
};
use super::pod::port_num_or_name;

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const SESSION_AFFINITIES: &[&str] = &["ClientIP", "None"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
const IP_FAMILIES: &[&str] = &["IPv4", "IPv6"];
const IP_FAMILY_POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
const MAX_CLIENT_IP_TIMEOUT: i32 = 86400;
const KUBELET_PORT: i32 = 10250;

fn is_headless(spec: &ServiceSpec) -> bool {
    spec.cluster_ip.as_deref() == Some("None")
}

fn service_port(
    sp: &ServicePort,
    require_name: bool,
    names: &mut BTreeSet<String>,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = sp.name.as_deref().unwrap_or_default();
    if require_name && name.is_empty() {
        errs.push(required(&path.child("name"), ""));
    } else if !name.is_empty() {
        errs.extend(name_errors(
            &path.child("name"),
            name,
            is_dns1123_label(name),
        ));
        if !names.insert(name.to_string()) {
            errs.push(duplicate(&path.child("name"), name));
        }
    }
    for msg in is_valid_port_num(i64::from(sp.port)) {
        errs.push(invalid(&path.child("port"), sp.port, &msg));
    }
    match sp.protocol.as_deref().unwrap_or_default() {
        "" => errs.push(required(&path.child("protocol"), "")),
        p if !PROTOCOLS.contains(&p) => {
            errs.push(not_supported(&path.child("protocol"), p, PROTOCOLS))
        }
        _ => {}
    }
    if let Some(target) = &sp.target_port {
        errs.extend(port_num_or_name(target, &path.child("targetPort")));
    }
    if let Some(app) = sp.app_protocol.as_deref() {
        errs.extend(name_errors(
            &path.child("appProtocol"),
            app,
            is_qualified_name(app),
        ));
    }
    errs
}

fn cluster_ips(spec: &ServiceSpec, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ips_path = path.child("clusterIPs");
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or_default();
    let ips = spec.cluster_ips.as_deref().unwrap_or_default();
    let ips_json = || json!(ips);
    if !cluster_ip.is_empty() {
        match ips.first() {
            None => errs.push(required(&ips_path, "")),
            Some(first) if first != cluster_ip => errs.push(invalid(
                &ips_path,
                ips_json(),
                "first value must match `clusterIP`",
            )),
            _ => {}
        }
    } else if !ips.is_empty() {
        errs.push(invalid(
            &ips_path,
            ips_json(),
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let families = spec.ip_families.as_deref().unwrap_or_default();
    let mut seen = BTreeSet::new();
    for (i, family) in families.iter().enumerate() {
        let p = path.child("ipFamilies").index(i);
        if !IP_FAMILIES.contains(&family.as_str()) {
            errs.push(not_supported(&p, family.as_str(), IP_FAMILIES));
        }
        if !seen.insert(family.as_str()) {
            errs.push(duplicate(&p, family.as_str()));
        }
    }
    if let Some(policy) = spec.ip_family_policy.as_deref() {
        if !IP_FAMILY_POLICIES.contains(&policy) {
            errs.push(not_supported(
                &path.child("ipFamilyPolicy"),
                policy,
                IP_FAMILY_POLICIES,
            ));
        }
    }
    let mut bad_ips = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == "None" {
            if ips.len() > 1 {
                bad_ips = true;
                errs.push(invalid(
                    &ips_path,
                    ips_json(),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        let msgs = is_valid_ip(ip);
        bad_ips |= !msgs.is_empty();
        errs.extend(name_errors(&ips_path.index(i), ip, msgs));
    }
    if ips.len() > 2 {
        bad_ips = true;
        errs.push(invalid(
            &ips_path,
            ips_json(),
            "may only hold up to 2 values",
        ));
    }
    if bad_ips {
        return errs;
    }
    let parsed: Vec<_> = ips.iter().filter_map(|ip| parse_ip_sloppy(ip)).collect();
    if ips.len() > 1 && parsed.len() == 2 && parsed[0].is_ipv4() == parsed[1].is_ipv4() {
        errs.push(invalid(
            &ips_path,
            ips_json(),
            "may specify no more than one IP for each IP family",
        ));
    }
    if !is_headless(spec) {
        for (i, (ip, family)) in ips.iter().zip(families).enumerate() {
            let v6 = parse_ip_sloppy(ip).is_some_and(|a| a.is_ipv6());
            if family == "IPv4" && v6 {
                errs.push(invalid(
                    &ips_path.index(i),
                    ip.as_str(),
                    &format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if family == "IPv6" && !v6 {
                errs.push(invalid(
                    &ips_path.index(i),
                    ip.as_str(),
                    &format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
    errs
}

/// Upstream's `ValidateService` minus object meta (done by the caller).
pub(crate) fn service(svc: &Service) -> Vec<FieldError> {
    let default_spec = ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&default_spec);
    let path = Path::new("spec");
    let mut errs = Vec::new();
    let ty = spec.type_.as_deref().unwrap_or_default();
    let ports = spec.ports.as_deref().unwrap_or_default();
    let headless = is_headless(spec);
    let first_ip = || {
        spec.cluster_ips
            .as_ref()
            .and_then(|ips| ips.first().cloned())
            .unwrap_or_else(|| "None".to_string())
    };
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(required(&path.child("ports"), ""));
    }
    match ty {
        "LoadBalancer" => {
            if headless {
                errs.push(invalid(
                    &path.child("clusterIPs").index(0),
                    first_ip(),
                    "may not be set to 'None' for LoadBalancer services",
                ));
            }
            for (i, p) in ports.iter().enumerate() {
                if p.port == KUBELET_PORT {
                    errs.push(invalid(
                        &path.child("ports").index(i),
                        p.port,
                        &format!("may not expose port {KUBELET_PORT} externally since it is used by kubelet"),
                    ));
                }
            }
        }
        "NodePort" if headless => {
            errs.push(invalid(
                &path.child("clusterIPs").index(0),
                first_ip(),
                "may not be set to 'None' for NodePort services",
            ));
        }
        "ExternalName" => {
            if spec.cluster_ips.as_ref().is_some_and(|ips| !ips.is_empty()) {
                errs.push(forbidden(
                    &path.child("clusterIPs"),
                    "may not be set for ExternalName services",
                ));
            }
            if spec.ip_families.as_ref().is_some_and(|f| !f.is_empty()) {
                errs.push(forbidden(
                    &path.child("ipFamilies"),
                    "may not be set for ExternalName services",
                ));
            }
            if spec.ip_family_policy.is_some() {
                errs.push(forbidden(
                    &path.child("ipFamilyPolicy"),
                    "may not be set for ExternalName services",
                ));
            }
            let name = spec.external_name.as_deref().unwrap_or_default();
            let cname = name.strip_suffix('.').unwrap_or(name);
            if cname.is_empty() {
                errs.push(required(&path.child("externalName"), ""));
            } else {
                errs.extend(name_errors(
                    &path.child("externalName"),
                    cname,
                    is_dns1123_subdomain(cname),
                ));
            }
        }
        _ => {}
    }
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        errs.extend(service_port(
            p,
            ports.len() > 1,
            &mut names,
            &path.child("ports").index(i),
        ));
    }
    errs.extend(labels(spec.selector.as_ref(), &path.child("selector")));
    let affinity = spec.session_affinity.as_deref().unwrap_or_default();
    if affinity.is_empty() {
        errs.push(required(&path.child("sessionAffinity"), ""));
    } else if !SESSION_AFFINITIES.contains(&affinity) {
        errs.push(not_supported(
            &path.child("sessionAffinity"),
            affinity,
            SESSION_AFFINITIES,
        ));
    }
    let config_path = path.child("sessionAffinityConfig");
    if affinity == "ClientIP" {
        let timeout = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds);
        let timeout_path = config_path.child("clientIP").child("timeoutSeconds");
        match timeout {
            None => errs.push(required(
                &timeout_path,
                "when session affinity type is ClientIP",
            )),
            Some(t) if t <= 0 || t > MAX_CLIENT_IP_TIMEOUT => errs.push(invalid(
                &timeout_path,
                t,
                &format!("must be greater than 0 and less than {MAX_CLIENT_IP_TIMEOUT}"),
            )),
            _ => {}
        }
    } else if affinity == "None" && spec.session_affinity_config.is_some() {
        errs.push(forbidden(
            &config_path,
            "must not be set when session affinity is None",
        ));
    }
    errs.extend(cluster_ips(spec, &path));
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        errs.extend(name_errors(
            &path.child("externalIPs").index(i),
            ip,
            is_valid_ip(ip),
        ));
    }
    if ty.is_empty() {
        errs.push(required(&path.child("type"), ""));
    } else if !SERVICE_TYPES.contains(&ty) {
        errs.push(not_supported(&path.child("type"), ty, SERVICE_TYPES));
    }
    if ty == "ClusterIP" {
        for (i, p) in ports.iter().enumerate() {
            if p.node_port.unwrap_or_default() != 0 {
                errs.push(forbidden(
                    &path.child("ports").index(i).child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports = BTreeSet::new();
    let mut port_keys = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let protocol = p.protocol.clone().unwrap_or_default();
        if let Some(np) = p.node_port.filter(|n| *n != 0) {
            if !node_ports.insert((protocol.clone(), np)) {
                errs.push(duplicate(
                    &path.child("ports").index(i).child("nodePort"),
                    np,
                ));
            }
        }
        if !port_keys.insert((protocol.clone(), p.port)) {
            errs.push(duplicate(
                &path.child("ports").index(i),
                json!({"port": p.port, "protocol": protocol}),
            ));
        }
    }
    if let Some(ranges) = spec
        .load_balancer_source_ranges
        .as_ref()
        .filter(|r| !r.is_empty())
    {
        let p = path.child("LoadBalancerSourceRanges");
        if ty != "LoadBalancer" {
            errs.push(forbidden(
                &p,
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for (i, r) in ranges.iter().enumerate() {
            let r = r.trim();
            errs.extend(name_errors(&p.index(i), r, is_valid_cidr(r)));
        }
    }
    if spec.allocate_load_balancer_node_ports.is_some() && ty != "LoadBalancer" {
        errs.push(forbidden(
            &path.child("allocateLoadBalancerNodePorts"),
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if ty == "LoadBalancer" && spec.allocate_load_balancer_node_ports.is_none() {
        errs.push(required(&Path::new("allocateLoadBalancerNodePorts"), ""));
    }
    let externally_accessible = ty == "LoadBalancer"
        || ty == "NodePort"
        || (ty == "ClusterIP" && spec.external_ips.as_ref().is_some_and(|i| !i.is_empty()));
    let etp = spec.external_traffic_policy.as_deref().unwrap_or_default();
    if !externally_accessible {
        if !etp.is_empty() {
            errs.push(invalid(
                &path.child("externalTrafficPolicy"),
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(required(&path.child("externalTrafficPolicy"), ""));
    } else if !TRAFFIC_POLICIES.contains(&etp) {
        errs.push(not_supported(
            &path.child("externalTrafficPolicy"),
            etp,
            TRAFFIC_POLICIES,
        ));
    }
    let needs_health_check = ty == "LoadBalancer" && etp == "Local";
    match spec.health_check_node_port.unwrap_or_default() {
        0 => {}
        hc if !needs_health_check => errs.push(invalid(
            &path.child("healthCheckNodePort"),
            hc,
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        )),
        hc => {
            for msg in is_valid_port_num(i64::from(hc)) {
                errs.push(invalid(&path.child("healthCheckNodePort"), hc, &msg));
            }
        }
    }
    match spec.internal_traffic_policy.as_deref() {
        None if ty != "ExternalName" => {
            errs.push(required(&path.child("internalTrafficPolicy"), ""))
        }
        Some(p) if !TRAFFIC_POLICIES.contains(&p) => errs.push(not_supported(
            &path.child("internalTrafficPolicy"),
            p,
            TRAFFIC_POLICIES,
        )),
        _ => {}
    }
    if let Some(td) = spec.traffic_distribution.as_deref() {
        if td != "PreferClose" {
            errs.push(not_supported(
                &path.child("trafficDistribution"),
                td,
                &["PreferClose"],
            ));
        }
    }
    errs
}

/// `validateUpgradeDowngradeClusterIPs` and the IP-family equivalent: the primary cluster
/// IP and family may not change once set (except to or from ExternalName).
pub(crate) fn service_update(new: &Service, old: &Service) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let default_spec = ServiceSpec::default();
    let ns = new.spec.as_ref().unwrap_or(&default_spec);
    let os = old.spec.as_ref().unwrap_or(&default_spec);
    let external = |s: &ServiceSpec| s.type_.as_deref() == Some("ExternalName");
    if external(ns) || external(os) {
        return errs;
    }
    let ips = |s: &ServiceSpec| -> Vec<String> {
        match s.cluster_ips.as_deref() {
            Some(ips) if !ips.is_empty() => ips.to_vec(),
            _ => s
                .cluster_ip
                .iter()
                .filter(|ip| !ip.is_empty())
                .cloned()
                .collect(),
        }
    };
    let (new_ips, old_ips) = (ips(ns), ips(os));
    let ips_path = Path::new("spec").child("clusterIPs");
    for i in 0..2 {
        if let (Some(n), Some(o)) = (new_ips.get(i), old_ips.get(i)) {
            if n != o {
                errs.push(invalid(
                    &ips_path.index(i),
                    json!(new_ips),
                    "may not change once set",
                ));
            }
        }
    }
    let (new_f, old_f) = (
        ns.ip_families.as_deref().unwrap_or_default(),
        os.ip_families.as_deref().unwrap_or_default(),
    );
    for i in 0..2 {
        if let (Some(n), Some(o)) = (new_f.get(i), old_f.get(i)) {
            if n != o {
                errs.push(invalid(
                    &Path::new("spec").child("ipFamilies").index(i),
                    Value::from(new_f.to_vec()),
                    "may not change once set",
                ));
            }
        }
    }
    errs
}
