//! Ingress, IngressClass, NetworkPolicy and EndpointSlice validation.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, Ingress, IngressBackend, IngressClass, NetworkPolicy, NetworkPolicyPeer,
    NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::field::{
    duplicate, forbidden, invalid, not_supported, required, too_long, too_many, FieldError, Path,
};
use super::meta::{immutable_field, label_selector, labels, name_errors, to_json};
use super::names::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_http_path, is_qualified_name,
    is_valid_cidr, is_valid_ipv4, is_valid_ipv6, is_valid_port_name, is_valid_port_num,
    is_wildcard_dns1123_subdomain, parse_cidr, parse_ip_sloppy,
};

/// Upstream's `ValidateNonSpecialIP`: no unspecified, loopback or link-local addresses.
pub(crate) fn non_special_ip(address: &str, path: &Path) -> Vec<FieldError> {
    let Some(ip) = parse_ip_sloppy(address) else {
        return vec![invalid(path, address, "must be a valid IP address")];
    };
    let mut errs = Vec::new();
    if ip.is_unspecified() {
        errs.push(invalid(
            path,
            address,
            &format!("may not be unspecified ({address})"),
        ));
    }
    if ip.is_loopback() {
        errs.push(invalid(
            path,
            address,
            "may not be in the loopback range (127.0.0.0/8, ::1/128)",
        ));
    }
    let (link_local_unicast, link_local_multicast) = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (
                o[0] == 169 && o[1] == 254,
                o[0] == 224 && o[1] == 0 && o[2] == 0,
            )
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xffc0 == 0xfe80, s[0] & 0xff0f == 0xff02)
        }
    };
    if link_local_unicast {
        errs.push(invalid(
            path,
            address,
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        ));
    }
    if link_local_multicast {
        errs.push(invalid(
            path,
            address,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ));
    }
    errs
}

const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];
const INVALID_PATH_SEQUENCES: &[&str] = &["//", "/./", "/../", "%2f", "%2F"];
const INVALID_PATH_SUFFIXES: &[&str] = &["/..", "/."];

fn ingress_backend(b: &IngressBackend, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match (&b.resource, &b.service) {
        (Some(_), Some(_)) => errs.push(invalid(
            path,
            "",
            "cannot set both resource and service backends",
        )),
        (Some(r), None) => {
            let rp = path.child("resource");
            if r.kind.is_empty() {
                errs.push(required(&rp.child("kind"), ""));
            }
            if r.name.is_empty() {
                errs.push(required(&rp.child("name"), ""));
            }
        }
        (None, Some(s)) => {
            let sp = path.child("service");
            if s.name.is_empty() {
                errs.push(required(&sp.child("name"), ""));
            } else {
                errs.extend(name_errors(
                    &sp.child("name"),
                    &s.name,
                    is_dns1035_label(&s.name),
                ));
            }
            let port = s.port.clone().unwrap_or_default();
            let name = port.name.as_deref().unwrap_or_default();
            let number = port.number.unwrap_or_default();
            if !name.is_empty() && number != 0 {
                errs.push(invalid(path, "", "cannot set both port name & port number"));
            } else if !name.is_empty() {
                errs.extend(name_errors(
                    &sp.child("port").child("name"),
                    name,
                    is_valid_port_name(name),
                ));
            } else if number != 0 {
                for msg in is_valid_port_num(i64::from(number)) {
                    errs.push(invalid(&sp.child("port").child("number"), number, &msg));
                }
            } else {
                errs.push(required(path, "port name or number is required"));
            }
        }
        (None, None) => errs.push(invalid(path, "", "resource or service backend is required")),
    }
    errs
}

fn http_ingress_path(p: &HTTPIngressPath, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if p.path_type.is_empty() {
        return vec![required(
            &path.child("pathType"),
            "pathType must be specified",
        )];
    }
    let value = p.path.as_deref().unwrap_or_default();
    match p.path_type.as_str() {
        "Exact" | "Prefix" => {
            if !value.starts_with('/') {
                errs.push(invalid(
                    &path.child("path"),
                    value,
                    "must be an absolute path",
                ));
            }
            if !value.is_empty() {
                for seq in INVALID_PATH_SEQUENCES {
                    if value.contains(seq) {
                        errs.push(invalid(
                            &path.child("path"),
                            value,
                            &format!("must not contain '{seq}'"),
                        ));
                    }
                }
                for suffix in INVALID_PATH_SUFFIXES {
                    if value.ends_with(suffix) {
                        errs.push(invalid(
                            &path.child("path"),
                            value,
                            &format!("cannot end with '{suffix}'"),
                        ));
                    }
                }
            }
        }
        "ImplementationSpecific" => {
            if !value.is_empty() && !value.starts_with('/') {
                errs.push(invalid(
                    &path.child("path"),
                    value,
                    "must be an absolute path",
                ));
            }
        }
        other => errs.push(not_supported(&path.child("pathType"), other, PATH_TYPES)),
    }
    errs.extend(ingress_backend(&p.backend, &path.child("backend")));
    errs
}

fn host_errors(host: &str, path: &Path) -> Vec<FieldError> {
    if host.contains('*') {
        name_errors(path, host, is_wildcard_dns1123_subdomain(host))
    } else {
        name_errors(path, host, is_dns1123_subdomain(host))
    }
}

pub(crate) fn ingress(ing: &Ingress) -> Vec<FieldError> {
    let spec = ing.spec.clone().unwrap_or_default();
    let path = Path::new("spec");
    let mut errs = Vec::new();
    let rules = spec.rules.clone().unwrap_or_default();
    if rules.is_empty() && spec.default_backend.is_none() {
        errs.push(invalid(
            &path,
            Value::Array(Vec::new()),
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(b) = &spec.default_backend {
        errs.extend(ingress_backend(b, &path.child("defaultBackend")));
    }
    for (i, rule) in rules.iter().enumerate() {
        let rp = path.child("rules").index(i);
        let host = rule.host.as_deref().unwrap_or_default();
        if !host.is_empty() {
            if parse_ip_sloppy(host).is_some() {
                errs.push(invalid(
                    &rp.child("host"),
                    host,
                    "must be a DNS name, not an IP address",
                ));
            }
            errs.extend(host_errors(host, &rp.child("host")));
        }
        if let Some(http) = &rule.http {
            let hp = rp.child("http");
            if http.paths.is_empty() {
                errs.push(required(&hp.child("paths"), ""));
            }
            for (j, p) in http.paths.iter().enumerate() {
                errs.extend(http_ingress_path(p, &hp.child("paths").index(j)));
            }
        }
    }
    for (i, tls) in spec.tls.iter().flatten().enumerate() {
        let tp = path.child("tls").index(i);
        for (j, host) in tls.hosts.iter().flatten().enumerate() {
            errs.extend(host_errors(host, &tp.child("hosts").index(j)));
        }
        if let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) {
            errs.extend(name_errors(
                &tp.child("secretName"),
                secret,
                is_dns1123_subdomain(secret),
            ));
        }
    }
    if let Some(class) = spec.ingress_class_name.as_deref() {
        errs.extend(name_errors(
            &path.child("ingressClassName"),
            class,
            is_dns1123_subdomain(class),
        ));
    }
    errs
}

const MAX_INGRESS_CLASS_CONTROLLER: usize = 250;

pub(crate) fn ingress_class(ic: &IngressClass) -> Vec<FieldError> {
    let spec = ic.spec.clone().unwrap_or_default();
    let path = Path::new("spec");
    let mut errs = Vec::new();
    let controller = spec.controller.as_deref().unwrap_or_default();
    let cp = path.child("controller");
    if controller.len() > MAX_INGRESS_CLASS_CONTROLLER {
        errs.push(too_long(&cp, MAX_INGRESS_CLASS_CONTROLLER));
    }
    if controller.is_empty() {
        errs.push(required(&cp, ""));
    } else {
        match controller.split_once('/') {
            Some((host, rest)) if !host.is_empty() && !rest.is_empty() => {
                errs.extend(name_errors(&cp, host, is_dns1123_subdomain(host)));
                errs.extend(name_errors(&cp, rest, is_http_path(rest)));
            }
            _ => errs.push(invalid(
                &cp,
                controller,
                "must be a domain-prefixed path (such as \"acme.io/foo\")",
            )),
        }
    }
    if let Some(p) = &spec.parameters {
        let pp = path.child("parameters");
        if p.kind.is_empty() {
            errs.push(required(&pp.child("kind"), ""));
        }
        if p.name.is_empty() {
            errs.push(required(&pp.child("name"), ""));
        }
        match p.scope.as_deref() {
            Some("Cluster") | None => {
                if p.namespace.is_some() {
                    errs.push(forbidden(
                        &pp.child("namespace"),
                        "`parameters.scope` is set to 'Cluster'",
                    ));
                }
            }
            Some("Namespace") => {
                if p.namespace.as_deref().unwrap_or_default().is_empty() {
                    errs.push(required(
                        &pp.child("namespace"),
                        "`parameters.scope` is set to 'Namespace'",
                    ));
                }
            }
            Some(other) => errs.push(not_supported(
                &pp.child("scope"),
                other,
                &["Cluster", "Namespace"],
            )),
        }
    }
    errs
}

pub(crate) fn ingress_class_update(new: &IngressClass, old: &IngressClass) -> Vec<FieldError> {
    let controller = |c: &IngressClass| c.spec.as_ref().and_then(|s| s.controller.clone());
    immutable_field(
        &controller(new),
        &controller(old),
        &Path::new("spec").child("controller"),
    )
}

fn network_policy_port(port: &NetworkPolicyPort, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(proto) = port.protocol.as_deref() {
        if !["TCP", "UDP", "SCTP"].contains(&proto) {
            errs.push(not_supported(
                &path.child("protocol"),
                proto,
                &["TCP", "UDP", "SCTP"],
            ));
        }
    }
    match &port.port {
        Some(IntOrString::Int(n)) => {
            for msg in is_valid_port_num(i64::from(*n)) {
                errs.push(invalid(&path.child("port"), *n, &msg));
            }
            if let Some(end) = port.end_port {
                if end < *n {
                    errs.push(invalid(
                        &path.child("endPort"),
                        *n,
                        "must be greater than or equal to `port`",
                    ));
                }
                for msg in is_valid_port_num(i64::from(end)) {
                    errs.push(invalid(&path.child("endPort"), end, &msg));
                }
            }
        }
        Some(IntOrString::String(s)) => {
            if let Some(end) = port.end_port {
                errs.push(invalid(
                    &path.child("endPort"),
                    end,
                    "may not be specified when `port` is non-numeric",
                ));
            }
            errs.extend(name_errors(&path.child("port"), s, is_valid_port_name(s)));
        }
        None => {
            if let Some(end) = port.end_port {
                errs.push(invalid(
                    &path.child("endPort"),
                    end,
                    "may not be specified when `port` is not specified",
                ));
            }
        }
    }
    errs
}

fn network_policy_peer(peer: &NetworkPolicyPeer, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut count = 0;
    if let Some(s) = &peer.pod_selector {
        count += 1;
        errs.extend(label_selector(s, &path.child("podSelector")));
    }
    if let Some(s) = &peer.namespace_selector {
        count += 1;
        errs.extend(label_selector(s, &path.child("namespaceSelector")));
    }
    if let Some(block) = &peer.ip_block {
        count += 1;
        let bp = path.child("ipBlock");
        if block.cidr.is_empty() {
            errs.push(required(&bp.child("cidr"), ""));
        } else {
            errs.extend(name_errors(
                &bp.child("cidr"),
                &block.cidr,
                is_valid_cidr(&block.cidr),
            ));
            if let Some((net, len)) = parse_cidr(&block.cidr) {
                for (i, except) in block.except.iter().flatten().enumerate() {
                    let ep = bp.child("except").index(i);
                    errs.extend(name_errors(&ep, except, is_valid_cidr(except)));
                    if let Some((ex_ip, ex_len)) = parse_cidr(except) {
                        if !cidr_contains(net, len, ex_ip) || len >= ex_len {
                            errs.push(invalid(
                                &ep,
                                except.as_str(),
                                "must be a strict subset of `cidr`",
                            ));
                        }
                    }
                }
            }
        }
    }
    if count == 0 {
        errs.push(required(path, "must specify a peer"));
    } else if count > 1 && peer.ip_block.is_some() {
        errs.push(forbidden(
            path,
            "may not specify both ipBlock and another peer",
        ));
    }
    errs
}

fn cidr_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

pub(crate) fn network_policy(np: &NetworkPolicy) -> Vec<FieldError> {
    let spec = np.spec.clone().unwrap_or_default();
    let path = Path::new("spec");
    let mut errs = Vec::new();
    if let Some(s) = &spec.pod_selector {
        errs.extend(label_selector(s, &path.child("podSelector")));
    }
    for (i, rule) in spec.ingress.iter().flatten().enumerate() {
        let rp = path.child("ingress").index(i);
        for (j, port) in rule.ports.iter().flatten().enumerate() {
            errs.extend(network_policy_port(port, &rp.child("ports").index(j)));
        }
        for (j, peer) in rule.from.iter().flatten().enumerate() {
            errs.extend(network_policy_peer(peer, &rp.child("from").index(j)));
        }
    }
    for (i, rule) in spec.egress.iter().flatten().enumerate() {
        let rp = path.child("egress").index(i);
        for (j, port) in rule.ports.iter().flatten().enumerate() {
            errs.extend(network_policy_port(port, &rp.child("ports").index(j)));
        }
        for (j, peer) in rule.to.iter().flatten().enumerate() {
            errs.extend(network_policy_peer(peer, &rp.child("to").index(j)));
        }
    }
    let types = spec.policy_types.clone().unwrap_or_default();
    if types.len() > 2 {
        errs.push(invalid(
            &path.child("policyTypes"),
            to_json(&types),
            "may not specify more than two policyTypes",
        ));
        return errs;
    }
    for (i, t) in types.iter().enumerate() {
        if t != "Ingress" && t != "Egress" {
            errs.push(not_supported(
                &path.child("policyTypes").index(i),
                t.as_str(),
                &["Ingress", "Egress"],
            ));
        }
    }
    errs
}

const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_PORTS: usize = 20000;
const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];

pub(crate) fn endpoint_slice(es: &EndpointSlice) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ep_path = Path::new("endpoints");
    if es.endpoints.len() > MAX_ENDPOINTS {
        errs.push(too_many(&ep_path, es.endpoints.len(), MAX_ENDPOINTS));
    } else {
        for (i, ep) in es.endpoints.iter().enumerate() {
            let p = ep_path.index(i);
            let ap = p.child("addresses");
            if ep.addresses.is_empty() {
                errs.push(required(&ap, "must contain at least 1 address"));
            } else if ep.addresses.len() > MAX_ADDRESSES {
                errs.push(too_many(&ap, ep.addresses.len(), MAX_ADDRESSES));
            }
            for (j, addr) in ep.addresses.iter().enumerate() {
                let idx = ap.index(j);
                match es.address_type.as_str() {
                    "IPv4" => {
                        let msgs = is_valid_ipv4(addr);
                        if msgs.is_empty() {
                            errs.extend(non_special_ip(addr, &idx));
                        } else {
                            errs.extend(name_errors(&idx, addr, msgs));
                        }
                    }
                    "IPv6" => {
                        let msgs = is_valid_ipv6(addr);
                        if msgs.is_empty() {
                            errs.extend(non_special_ip(addr, &idx));
                        } else {
                            errs.extend(name_errors(&idx, addr, msgs));
                        }
                    }
                    "FQDN" => {
                        let name = addr.strip_suffix('.').unwrap_or(addr);
                        let msgs = is_dns1123_subdomain(name);
                        if !msgs.is_empty() {
                            errs.push(invalid(&idx, name, &msgs.join(",")));
                        } else if !name.contains('.') {
                            errs.push(invalid(
                                &idx,
                                name,
                                "should be a domain with at least two segments separated by dots",
                            ));
                        }
                    }
                    _ => {}
                }
            }
            if let Some(node) = ep.node_name.as_deref() {
                errs.extend(name_errors(
                    &p.child("nodeName"),
                    node,
                    is_dns1123_subdomain(node),
                ));
            }
            errs.extend(labels(
                ep.deprecated_topology.as_ref(),
                &p.child("deprecatedTopology"),
            ));
            if let Some(h) = ep.hostname.as_deref() {
                errs.extend(name_errors(&p.child("hostname"), h, is_dns1123_label(h)));
            }
        }
    }
    let ports = es.ports.as_deref().unwrap_or_default();
    let pp = Path::new("ports");
    if ports.len() > MAX_PORTS {
        errs.push(too_many(&pp, ports.len(), MAX_PORTS));
    } else {
        let mut names = BTreeSet::new();
        for (i, port) in ports.iter().enumerate() {
            let p = pp.index(i);
            let name = port.name.as_deref().unwrap_or_default();
            if !name.is_empty() {
                errs.extend(name_errors(&p.child("name"), name, is_dns1123_label(name)));
            }
            if !names.insert(name) {
                errs.push(duplicate(&p.child("name"), name));
            }
            match port.protocol.as_deref() {
                None => errs.push(required(&p.child("protocol"), "")),
                Some(proto) if !["SCTP", "TCP", "UDP"].contains(&proto) => errs.push(
                    not_supported(&p.child("protocol"), proto, &["SCTP", "TCP", "UDP"]),
                ),
                _ => {}
            }
            if let Some(app) = port.app_protocol.as_deref() {
                errs.extend(name_errors(
                    &p.child("appProtocol"),
                    app,
                    is_qualified_name(app),
                ));
            }
        }
    }
    let at = Path::new("addressType");
    if es.address_type.is_empty() {
        errs.push(required(&at, ""));
    } else if !ADDRESS_TYPES.contains(&es.address_type.as_str()) {
        errs.push(not_supported(&at, es.address_type.as_str(), ADDRESS_TYPES));
    }
    errs
}

pub(crate) fn endpoint_slice_update(new: &EndpointSlice, old: &EndpointSlice) -> Vec<FieldError> {
    immutable_field(
        &new.address_type,
        &old.address_type,
        &Path::new("addressType"),
    )
}
