//! Ingresses, IngressClasses and NetworkPolicies.

use jiff::Timestamp;
use serde_json::Value;

use super::descriptions as d;
use super::fields::{age, get, list_at, name, opt_str_at, str_at};
use super::labels::format_label_selector;
use super::service::load_balancer_ingress;
use super::Column;

pub(super) const INGRESS_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    Column::new(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
    ),
    Column::new(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
    ),
    Column::new("Ports", "string", "Ports of TLS configurations that open"),
    Column::age(),
];

pub(super) const INGRESS_CLASS_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new(
        "Controller",
        "string",
        "Controller that is responsible for handling this class",
    ),
    Column::new(
        "Parameters",
        "string",
        "A reference to a resource with additional parameters",
    ),
    Column::age(),
];

pub(super) const NETWORK_POLICY_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new(
        "Pod-Selector",
        "string",
        d::NETWORK_POLICY_SPEC_POD_SELECTOR,
    ),
    Column::age(),
];

/// How many hosts the HOSTS cell lists before "+ N more...".
const HOSTS_LIMIT: usize = 3;

pub(super) fn ingress_cells(ing: &Value, now: Timestamp) -> Vec<Value> {
    let ports = if list_at(ing, &["spec", "tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    let address =
        load_balancer_ingress(list_at(ing, &["status", "loadBalancer", "ingress"])).join(",");
    vec![
        Value::from(name(ing)),
        Value::from(opt_str_at(ing, &["spec", "ingressClassName"]).unwrap_or("<none>")),
        Value::from(hosts(list_at(ing, &["spec", "rules"]))),
        Value::from(address),
        Value::from(ports),
        Value::from(age(ing, now)),
    ]
}

/// Up to three rule hosts, "*" when no rule names one. Once three are listed, the count of
/// the remaining rules (with a host or not) follows.
fn hosts(rules: &[Value]) -> String {
    let listed: Vec<&str> = rules
        .iter()
        .map(|r| str_at(r, &["host"]))
        .filter(|h| !h.is_empty())
        .take(HOSTS_LIMIT)
        .collect();
    if listed.is_empty() {
        return "*".to_string();
    }
    // Upstream stops collecting when the list is full and then counts every rule.
    let full_at = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| !str_at(r, &["host"]).is_empty())
        .nth(HOSTS_LIMIT - 1)
        .map(|(i, _)| i);
    let joined = listed.join(",");
    match full_at {
        Some(i) if i + 1 < rules.len() => {
            format!("{joined} + {} more...", rules.len() - HOSTS_LIMIT)
        }
        _ => joined,
    }
}

pub(super) fn ingress_class_cells(class: &Value, now: Timestamp) -> Vec<Value> {
    let parameters = match get(class, &["spec", "parameters"]).filter(|p| !p.is_null()) {
        Some(p) => {
            let mut kind = str_at(p, &["kind"]).to_string();
            if let Some(group) = opt_str_at(p, &["apiGroup"]) {
                kind = format!("{kind}.{group}");
            }
            format!("{kind}/{}", str_at(p, &["name"]))
        }
        None => "<none>".to_string(),
    };
    vec![
        Value::from(name(class)),
        Value::from(str_at(class, &["spec", "controller"])),
        Value::from(parameters),
        Value::from(age(class, now)),
    ]
}

pub(super) fn network_policy_cells(policy: &Value, now: Timestamp) -> Vec<Value> {
    // An unset selector prints like an empty one: "<none>".
    vec![
        Value::from(name(policy)),
        Value::from(format_label_selector(get(policy, &["spec", "podSelector"]))),
        Value::from(age(policy, now)),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{info, now};
    use super::super::{column_definitions, row_cells};
    use serde_json::{json, Value};

    fn ingress(spec: Value, status: Value) -> Vec<Value> {
        let ing = json!({"metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:00:00Z"},
                         "spec": spec, "status": status});
        row_cells(info("networking.k8s.io", "ingresses"), &ing, now())
    }

    #[test]
    fn ingress_columns_are_upstreams() {
        let names: Vec<_> = column_definitions(info("networking.k8s.io", "ingresses"))
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(names, ["Name", "Class", "Hosts", "Address", "Ports", "Age"]);
    }

    #[test]
    fn ingress_with_tls_and_address() {
        let cells = ingress(
            json!({"ingressClassName": "traefik",
                   "tls": [{"hosts": ["app.example.com"], "secretName": "app-tls"}],
                   "rules": [{"host": "app.example.com"}, {"host": "api.example.com"}]}),
            json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.240"}]}}),
        );
        assert_eq!(
            cells,
            [
                "web",
                "traefik",
                "app.example.com,api.example.com",
                "192.168.1.240",
                "80, 443",
                "60m"
            ]
        );
    }

    #[test]
    fn ingress_hosts() {
        let rules = |hosts: &[&str]| {
            let rules: Vec<Value> = hosts.iter().map(|h| json!({"host": h})).collect();
            ingress(json!({"rules": rules}), json!({}))[2].clone()
        };
        assert_eq!(rules(&[]), "*");
        assert_eq!(rules(&[""]), "*");
        assert_eq!(rules(&["a", "", "b"]), "a,b");
        assert_eq!(rules(&["a", "b", "c"]), "a,b,c");
        assert_eq!(rules(&["a", "b", "c", "d", "e"]), "a,b,c + 2 more...");
        assert_eq!(rules(&["a", "", "b", "c", ""]), "a,b,c + 2 more...");
        let cells = ingress(json!({}), json!({}));
        assert_eq!(cells[1..5], ["<none>", "*", "", "80"]);
    }

    #[test]
    fn ingress_class() {
        let class = json!({
            "metadata": {"name": "traefik", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"controller": "traefik.io/ingress-controller",
                     "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters",
                                    "name": "external-lb", "scope": "Cluster"}},
        });
        assert_eq!(
            row_cells(info("networking.k8s.io", "ingressclasses"), &class, now()),
            [
                "traefik",
                "traefik.io/ingress-controller",
                "IngressParameters.k8s.example.com/external-lb",
                "60m"
            ]
        );
        let plain =
            json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}});
        assert_eq!(
            row_cells(info("networking.k8s.io", "ingressclasses"), &plain, now())[2],
            "<none>"
        );
    }

    #[test]
    fn network_policy() {
        let policy = json!({
            "metadata": {"name": "db", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Ingress"]},
        });
        assert_eq!(
            row_cells(info("networking.k8s.io", "networkpolicies"), &policy, now()),
            ["db", "role=db", "60m"]
        );
        let deny_all = json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
        assert_eq!(
            row_cells(
                info("networking.k8s.io", "networkpolicies"),
                &deny_all,
                now()
            )[1],
            "<none>"
        );
    }
}
