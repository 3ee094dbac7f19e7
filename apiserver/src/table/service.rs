//! Services, Endpoints and EndpointSlices.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::Value;

use super::descriptions as d;
use super::fields::{age, int_at, list_at, map_at, name, opt_int_at, opt_str_at, str_at, str_or};
use super::labels::format_labels;
use super::Column;

pub(super) const SERVICE_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Type", "string", d::SERVICE_SPEC_TYPE),
    Column::new("Cluster-IP", "string", d::SERVICE_SPEC_CLUSTER_IP),
    Column::new("External-IP", "string", d::SERVICE_SPEC_EXTERNAL_IPS),
    Column::new("Port(s)", "string", d::SERVICE_SPEC_PORTS),
    Column::age(),
    Column::wide("Selector", "string", d::SERVICE_SPEC_SELECTOR),
];

pub(super) const ENDPOINTS_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Endpoints", "string", d::ENDPOINTS_SUBSETS),
    Column::age(),
];

pub(super) const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("AddressType", "string", d::ENDPOINT_SLICE_ADDRESS_TYPE),
    Column::new("Ports", "string", d::ENDPOINT_SLICE_PORTS),
    Column::new("Endpoints", "string", d::ENDPOINT_SLICE_ENDPOINTS),
    Column::age(),
];

/// How many entries list cells show before "+ N more...".
const LIST_LIMIT: usize = 3;

pub(super) fn service_cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    let ports = port_string(list_at(svc, &["spec", "ports"]));
    vec![
        Value::from(name(svc)),
        Value::from(service_type(svc)),
        Value::from(cluster_ip(svc)),
        Value::from(external_ip(svc)),
        Value::from(if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports
        }),
        Value::from(age(svc, now)),
        Value::from(format_labels(map_at(svc, &["spec", "selector"]))),
    ]
}

/// `spec.type`, which defaults to ClusterIP.
fn service_type(svc: &Value) -> &str {
    str_or(svc, &["spec", "type"], "ClusterIP")
}

/// The primary cluster IP ("None" for headless services), or "<none>". `clusterIP` wins
/// over `clusterIPs[0]`, as in upstream's v1 conversion.
fn cluster_ip(svc: &Value) -> &str {
    let ip = str_at(svc, &["spec", "clusterIP"]);
    if !ip.is_empty() {
        return ip;
    }
    list_at(svc, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .unwrap_or("<none>")
}

/// The external addresses of a service by type: external IPs, load-balancer ingress points
/// ("<pending>" until the load balancer has one) or the external name.
fn external_ip(svc: &Value) -> String {
    let external_ips: Vec<&str> = list_at(svc, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match service_type(svc) {
        "ClusterIP" | "NodePort" if external_ips.is_empty() => "<none>".to_string(),
        "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            let mut addresses: Vec<&str> =
                load_balancer_ingress(list_at(svc, &["status", "loadBalancer", "ingress"]));
            addresses.extend(external_ips);
            if addresses.is_empty() {
                "<pending>".to_string()
            } else {
                addresses.join(",")
            }
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// The distinct IPs (or else hostnames) of load-balancer ingress points, sorted. Upstream
/// clips this to 16 characters only for narrow client-side output; server-side printing is
/// always wide.
pub(super) fn load_balancer_ingress(ingress: &[Value]) -> Vec<&str> {
    ingress
        .iter()
        .filter_map(|i| {
            [opt_str_at(i, &["ip"]), opt_str_at(i, &["hostname"])]
                .into_iter()
                .flatten()
                .find(|s| !s.is_empty())
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// "80/TCP", or "80:30080/TCP" with a node port, joined by ",".
fn port_string(ports: &[Value]) -> String {
    ports
        .iter()
        .map(|p| {
            let (port, protocol) = (int_at(p, &["port"]), str_or(p, &["protocol"], "TCP"));
            match int_at(p, &["nodePort"]) {
                node_port if node_port > 0 => format!("{port}:{node_port}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn endpoints_cells(ep: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        Value::from(name(ep)),
        Value::from(format_endpoints(ep)),
        Value::from(age(ep, now)),
    ]
}

/// Up to three `ip:port` pairs (bare IPs for port-less headless services), then
/// "+ N more...", or "<none>" without subsets.
fn format_endpoints(ep: &Value) -> String {
    let subsets = list_at(ep, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut list: Vec<String> = Vec::new();
    let mut count = 0usize;
    for subset in subsets {
        let addresses = list_at(subset, &["addresses"]);
        let ips = addresses.iter().map(|a| str_at(a, &["ip"]));
        let ports = list_at(subset, &["ports"]);
        if ports.is_empty() {
            count += addresses.len();
            list.extend(ips.take(LIST_LIMIT - list.len()).map(str::to_string));
            continue;
        }
        for port in ports {
            count += addresses.len();
            let port = int_at(port, &["port"]);
            let room = LIST_LIMIT - list.len();
            list.extend(ips.clone().take(room).map(|ip| join_host_port(ip, port)));
        }
    }
    list_with_more(list, count, "")
}

/// Go's `net.JoinHostPort`: IPv6 addresses in brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The entries joined by ",", "+ N more..." when `count` exceeds what is listed, and
/// `empty` when there is nothing.
fn list_with_more(list: Vec<String>, count: usize, empty: &str) -> String {
    let shown = list.len();
    let joined = list.join(",");
    if count > shown && shown == LIST_LIMIT {
        format!("{joined} + {} more...", count - LIST_LIMIT)
    } else if joined.is_empty() {
        empty.to_string()
    } else {
        joined
    }
}

pub(super) fn endpoint_slice_cells(slice: &Value, now: Timestamp) -> Vec<Value> {
    let ports: Vec<String> = list_at(slice, &["ports"])
        .iter()
        .map(
            |p| match (opt_int_at(p, &["port"]), opt_str_at(p, &["name"])) {
                (Some(port), _) => port.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".to_string(),
            },
        )
        .collect();
    let port_count = ports.len();
    let addresses: Vec<String> = list_at(slice, &["endpoints"])
        .iter()
        .flat_map(|e| list_at(e, &["addresses"]))
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect();
    let address_count = addresses.len();
    vec![
        Value::from(name(slice)),
        Value::from(str_at(slice, &["addressType"])),
        Value::from(list_with_more(
            ports.into_iter().take(LIST_LIMIT).collect(),
            port_count,
            "<unset>",
        )),
        Value::from(list_with_more(
            addresses.into_iter().take(LIST_LIMIT).collect(),
            address_count,
            "<unset>",
        )),
        Value::from(age(slice, now)),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{info, now};
    use super::super::{column_definitions, row_cells};
    use serde_json::{json, Value};

    fn svc(spec: Value, status: Value) -> Vec<Value> {
        let obj = json!({
            "metadata": {"name": "web", "namespace": "default",
                         "creationTimestamp": "2024-05-01T09:00:00Z"},
            "spec": spec,
            "status": status,
        });
        row_cells(info("", "services"), &obj, now())
    }

    #[test]
    fn service_columns_are_upstreams() {
        let names: Vec<_> = column_definitions(info("", "services"))
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Type",
                "Cluster-IP",
                "External-IP",
                "Port(s)",
                "Age",
                "Selector"
            ]
        );
    }

    #[test]
    fn cluster_ip_service() {
        let cells = svc(
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                   "selector": {"k8s-app": "kube-dns"},
                   "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                             {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}),
            json!({}),
        );
        assert_eq!(
            cells,
            [
                "web",
                "ClusterIP",
                "10.96.0.10",
                "<none>",
                "53/UDP,53/TCP",
                "3h",
                "k8s-app=kube-dns"
            ]
        );
    }

    #[test]
    fn node_port_and_headless_services() {
        let cells = svc(
            json!({"type": "NodePort", "clusterIP": "10.96.12.1", "externalIPs": ["192.168.1.50"],
                   "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
            json!({}),
        );
        assert_eq!(cells[2..5], ["10.96.12.1", "192.168.1.50", "80:30080/TCP"]);
        assert_eq!(cells[6], "<none>");

        let cells = svc(json!({"type": "ClusterIP", "clusterIP": "None"}), json!({}));
        assert_eq!(cells[2..5], ["None", "<none>", "<none>"]);
    }

    #[test]
    fn load_balancer_services() {
        let spec = json!({"type": "LoadBalancer", "clusterIP": "10.96.5.5",
                          "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]});
        assert_eq!(svc(spec.clone(), json!({}))[3], "<pending>");
        let status = json!({"loadBalancer": {"ingress": [
            {"ip": "203.0.113.20"}, {"hostname": "lb.example.com"}, {"ip": "203.0.113.10"},
            {"ip": "203.0.113.10"},
        ]}});
        assert_eq!(
            svc(spec.clone(), status)[3],
            "203.0.113.10,203.0.113.20,lb.example.com"
        );
        let mut with_external = spec;
        with_external["externalIPs"] = json!(["192.168.1.60"]);
        let status = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}});
        assert_eq!(svc(with_external, status)[3], "203.0.113.10,192.168.1.60");
    }

    #[test]
    fn unset_type_and_protocol_read_as_their_defaults() {
        let cells = svc(
            json!({"clusterIP": "10.96.0.1", "ports": [{"port": 443}]}),
            json!({}),
        );
        assert_eq!(cells[1..5], ["ClusterIP", "10.96.0.1", "<none>", "443/TCP"]);
    }

    #[test]
    fn external_name_service() {
        let cells = svc(
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
            json!({}),
        );
        assert_eq!(
            cells[1..5],
            ["ExternalName", "<none>", "db.example.com", "<none>"]
        );
    }

    fn endpoints(subsets: Value) -> Value {
        let obj = json!({"metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:00:00Z"},
                         "subsets": subsets});
        row_cells(info("", "endpoints"), &obj, now())[1].clone()
    }

    #[test]
    fn endpoints_list_three_then_more() {
        assert_eq!(endpoints(json!(null)), "<none>");
        assert_eq!(
            endpoints(
                json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                              "ports": [{"port": 80, "protocol": "TCP"}]}])
            ),
            "10.0.0.1:80,10.0.0.2:80"
        );
        assert_eq!(
            endpoints(json!([{
                "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}],
            }])),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
        );
        assert_eq!(
            endpoints(json!([
                {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}]},
                {"addresses": [{"ip": "10.0.1.1"}, {"ip": "10.0.1.2"}], "ports": [{"port": 8080}]},
            ])),
            "10.0.0.1:80,10.0.0.2:80,10.0.1.1:8080 + 1 more..."
        );
    }

    #[test]
    fn headless_ipv6_and_not_ready_endpoints() {
        assert_eq!(
            endpoints(json!([{"addresses": [{"ip": "10.0.0.1"}]}])),
            "10.0.0.1"
        );
        assert_eq!(
            endpoints(json!([{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}])),
            "[fd00::1]:80"
        );
        assert_eq!(
            endpoints(
                json!([{"notReadyAddresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}])
            ),
            ""
        );
    }

    #[test]
    fn endpoint_slices() {
        let slice = json!({
            "metadata": {"name": "web-abc12", "creationTimestamp": "2024-05-01T11:58:00Z"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "metrics"}, {}],
            "endpoints": [
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}},
                {"addresses": ["10.244.2.7"]},
                {"addresses": ["10.244.3.2"]},
                {"addresses": ["10.244.3.9"]},
            ],
        });
        assert_eq!(
            row_cells(info("discovery.k8s.io", "endpointslices"), &slice, now()),
            [
                "web-abc12",
                "IPv4",
                "80,metrics,*",
                "10.244.1.5,10.244.2.7,10.244.3.2 + 1 more...",
                "2m"
            ]
        );
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv6"});
        assert_eq!(
            row_cells(info("discovery.k8s.io", "endpointslices"), &empty, now())[1..4],
            ["IPv6", "<unset>", "<unset>"]
        );
    }
}
