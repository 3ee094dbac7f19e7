//! Services: ClusterIP and NodePort allocation on create and update, release on delete.

use crate::ipalloc::{AllocError, IpAllocator, PortAllocator};
use crate::object;
use crate::status::{ApiError, ApiResult};
use api_types::resources::ResourceInfo;
use serde_json::{json, Value};
use std::net::IpAddr;

/// The allocators of one apiserver.
#[derive(Debug)]
pub struct ServiceAllocators {
    pub ips: IpAllocator,
    pub ports: PortAllocator,
}

/// What one Service holds.
#[derive(Debug, Default, PartialEq)]
struct Held {
    ips: Vec<IpAddr>,
    ports: Vec<u16>,
}

fn svc_type(svc: &Value) -> &str {
    svc.pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

fn wants_node_ports(svc: &Value) -> bool {
    matches!(svc_type(svc), "NodePort" | "LoadBalancer")
}

/// A LoadBalancer Service with `externalTrafficPolicy: Local` gets a health-check node
/// port (upstream's `needsHCNodePort`), served by kube-proxy on every node.
fn wants_health_check_port(svc: &Value) -> bool {
    svc_type(svc) == "LoadBalancer"
        && svc
            .pointer("/spec/externalTrafficPolicy")
            .and_then(Value::as_str)
            == Some("Local")
}

fn health_check_port(svc: &Value) -> u16 {
    svc.pointer("/spec/healthCheckNodePort")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0)
}

fn held(svc: &Value) -> Held {
    let mut h = Held::default();
    let ips = svc
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .or_else(|| {
            svc.pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .map(|s| vec![s.to_string()])
        })
        .unwrap_or_default();
    h.ips = ips.iter().filter_map(|s| s.parse().ok()).collect();
    if let Some(ports) = svc.pointer("/spec/ports").and_then(Value::as_array) {
        h.ports = ports
            .iter()
            .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
            .filter(|p| *p > 0)
            .map(|p| p as u16)
            .collect();
    }
    let hc = health_check_port(svc);
    if hc != 0 && !h.ports.contains(&hc) {
        h.ports.push(hc);
    }
    h
}

/// Records the Services found in storage at start.
pub fn rebuild(alloc: &mut ServiceAllocators, services: impl Iterator<Item = Value>) {
    for svc in services {
        let h = held(&svc);
        for ip in h.ips {
            if let Err(e) = alloc.ips.allocate(ip) {
                tracing::warn!(%ip, error = %e, "stored Service holds an IP that cannot be recorded");
            }
        }
        for port in h.ports {
            if let Err(e) = alloc.ports.allocate(port) {
                tracing::warn!(port, error = %e, "stored Service holds a nodePort that cannot be recorded");
            }
        }
    }
}

/// Allocations made for a write, undone when the write fails.
#[derive(Debug, Default)]
pub struct Pending {
    new: Held,
    release_after: Held,
}

impl Pending {
    pub fn rollback(self, alloc: &mut ServiceAllocators) {
        for ip in self.new.ips {
            alloc.ips.release(ip);
        }
        for p in self.new.ports {
            alloc.ports.release(p);
        }
    }

    pub fn commit(self, alloc: &mut ServiceAllocators) {
        for ip in self.release_after.ips {
            alloc.ips.release(ip);
        }
        for p in self.release_after.ports {
            alloc.ports.release(p);
        }
    }
}

/// Fills in and reserves `clusterIP(s)` and `nodePort`s for a new or changed Service.
pub fn allocate(
    info: &ResourceInfo,
    alloc: &mut ServiceAllocators,
    svc: &mut Value,
    old: Option<&Value>,
) -> ApiResult<Pending> {
    let name = object::name(svc).unwrap_or("").to_string();
    let before = old.map(held).unwrap_or_default();
    let mut pending = Pending::default();
    let result = fill(info, &name, alloc, svc, &before, &mut pending);
    if let Err(e) = result {
        pending.rollback(alloc);
        return Err(e);
    }
    let after = held(svc);
    pending.release_after = Held {
        ips: before
            .ips
            .iter()
            .filter(|ip| !after.ips.contains(ip))
            .copied()
            .collect(),
        ports: before
            .ports
            .iter()
            .filter(|p| !after.ports.contains(p))
            .copied()
            .collect(),
    };
    Ok(pending)
}

fn fill(
    info: &ResourceInfo,
    name: &str,
    alloc: &mut ServiceAllocators,
    svc: &mut Value,
    before: &Held,
    pending: &mut Pending,
) -> ApiResult<()> {
    let external_name = svc_type(svc) == "ExternalName";
    let cluster_ip = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .map(String::from)
        .or_else(|| {
            svc.pointer("/spec/clusterIPs/0")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_default();
    if external_name {
        if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
            if cluster_ip.is_empty() {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
        }
    } else if cluster_ip == "None" {
        svc["spec"]["clusterIP"] = json!("None");
        svc["spec"]["clusterIPs"] = json!(["None"]);
    } else if cluster_ip.is_empty() {
        let ip = alloc
            .ips
            .allocate_next()
            .map_err(|e| ApiError::internal(format!("failed to allocate a serviceIP: {e}")))?;
        pending.new.ips.push(ip);
        set_ip(svc, ip);
    } else {
        let ip: IpAddr = cluster_ip.parse().map_err(|_| {
            ApiError::invalid_field(
                info,
                name,
                "spec.clusterIPs[0]",
                &json!(cluster_ip),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )
        })?;
        if !before.ips.contains(&ip) {
            alloc.ips.allocate(ip).map_err(|e| {
                ApiError::invalid_field(
                    info,
                    name,
                    "spec.clusterIPs",
                    &json!([cluster_ip]),
                    &format!("failed to allocate IP {cluster_ip}: {e}"),
                )
            })?;
            pending.new.ips.push(ip);
        }
        set_ip(svc, ip);
    }

    let wants = wants_node_ports(svc);
    if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for (i, port) in ports.iter_mut().enumerate() {
            let requested = port.get("nodePort").and_then(Value::as_u64).unwrap_or(0) as u16;
            if !wants {
                if requested != 0 {
                    return Err(ApiError::invalid_field(
                        info,
                        name,
                        &format!("spec.ports[{i}].nodePort"),
                        &json!(requested),
                        "may not be used when `type` is 'ClusterIP'",
                    ));
                }
                continue;
            }
            if requested == 0 {
                let p = alloc.ports.allocate_next().map_err(|e| {
                    ApiError::internal(format!("failed to allocate a nodePort: {e}"))
                })?;
                pending.new.ports.push(p);
                port["nodePort"] = json!(p);
            } else if !before.ports.contains(&requested) || pending.new.ports.contains(&requested) {
                alloc.ports.allocate(requested).map_err(|e| {
                    let detail = match e {
                        AllocError::PortAllocated => {
                            "provided port is already allocated".to_string()
                        }
                        other => other.to_string(),
                    };
                    ApiError::invalid_field(
                        info,
                        name,
                        &format!("spec.ports[{i}].nodePort"),
                        &json!(requested),
                        &detail,
                    )
                })?;
                pending.new.ports.push(requested);
            }
        }
    }

    let hc = health_check_port(svc);
    if !wants_health_check_port(svc) {
        if hc != 0 {
            return Err(ApiError::invalid_field(
                info,
                name,
                "spec.healthCheckNodePort",
                &json!(hc),
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    } else if hc == 0 {
        let p = alloc.ports.allocate_next().map_err(|e| {
            ApiError::internal(format!("failed to allocate a healthCheckNodePort: {e}"))
        })?;
        pending.new.ports.push(p);
        svc["spec"]["healthCheckNodePort"] = json!(p);
    } else if !before.ports.contains(&hc) || pending.new.ports.contains(&hc) {
        alloc.ports.allocate(hc).map_err(|e| {
            let detail = match e {
                AllocError::PortAllocated => "provided port is already allocated".to_string(),
                other => other.to_string(),
            };
            ApiError::invalid_field(info, name, "spec.healthCheckNodePort", &json!(hc), &detail)
        })?;
        pending.new.ports.push(hc);
    }
    Ok(())
}

fn set_ip(svc: &mut Value, ip: IpAddr) {
    svc["spec"]["clusterIP"] = json!(ip.to_string());
    svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    svc["spec"]["ipFamilies"] = json!([family]);
    if svc.pointer("/spec/ipFamilyPolicy").is_none() {
        svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
    }
}

/// Carries allocated values the client left out of an update over from the stored Service,
/// as upstream's `patchAllocatedValues`: a PUT without `clusterIP` keeps the address.
pub fn keep_allocated_values(new: &mut Value, old: &Value) {
    let old_type = svc_type(old);
    let new_type = svc_type(new).to_string();
    if new_type != "ExternalName" && old_type != "ExternalName" {
        let unset = new
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if unset {
            for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                if let Some(v) = old.pointer(&format!("/spec/{f}")) {
                    new["spec"][f] = v.clone();
                }
            }
        }
    }
    // Leaving NodePort/LoadBalancer drops the node ports that were allocated for it, as
    // upstream's dropTypeDependentFields (a client re-sending them would be refused).
    if !wants_node_ports(new) && wants_node_ports(old) {
        for f in [
            "externalTrafficPolicy",
            "healthCheckNodePort",
            "allocateLoadBalancerNodePorts",
        ] {
            let unchanged =
                new.pointer(&format!("/spec/{f}")) == old.pointer(&format!("/spec/{f}"));
            if unchanged {
                if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove(f);
                }
            }
        }
        let allocated = held(old).ports;
        if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut() {
                let np = p.get("nodePort").and_then(Value::as_u64).unwrap_or(0) as u16;
                if allocated.contains(&np) {
                    if let Some(o) = p.as_object_mut() {
                        o.remove("nodePort");
                    }
                }
            }
        }
    }
    // The health-check port follows the policy: kept while it is still needed and the
    // client left it out, dropped (and so released) once it is not, unless the client
    // set it (then validation refuses it).
    if wants_health_check_port(new) && wants_health_check_port(old) && health_check_port(new) == 0 {
        if let Some(hc) = old.pointer("/spec/healthCheckNodePort") {
            new["spec"]["healthCheckNodePort"] = hc.clone();
        }
    } else if !wants_health_check_port(new)
        && wants_health_check_port(old)
        && new.pointer("/spec/healthCheckNodePort") == old.pointer("/spec/healthCheckNodePort")
    {
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("healthCheckNodePort");
        }
    }
    if wants_node_ports(new) && wants_node_ports(old) {
        let old_ports: Vec<&Value> = old
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut() {
                if p.get("nodePort").and_then(Value::as_u64).unwrap_or(0) != 0 {
                    continue;
                }
                let same = old_ports.iter().find(|o| {
                    o.get("port") == p.get("port")
                        && o.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                            == p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                });
                if let Some(n) = same.and_then(|o| o.get("nodePort")) {
                    p["nodePort"] = n.clone();
                }
            }
        }
    }
}

/// Frees what a deleted Service held.
pub fn release(alloc: &mut ServiceAllocators, svc: &Value) {
    let h = held(svc);
    for ip in h.ips {
        alloc.ips.release(ip);
    }
    for p in h.ports {
        alloc.ports.release(p);
    }
}
