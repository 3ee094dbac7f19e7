use serde_json::{json, Value};

use super::*;
use crate::defaults::apply_defaults;
use crate::resources::find;

fn info(group: &str, plural: &str) -> &'static ResourceInfo {
    find(group, "v1", plural).unwrap_or_else(|| panic!("no {group}/{plural}"))
}

fn defaulted(group: &str, plural: &str, mut obj: Value) -> Value {
    apply_defaults(info(group, plural), &mut obj).unwrap();
    obj
}

fn create(group: &str, plural: &str, obj: Value) -> Vec<FieldError> {
    validate_create(info(group, plural), &defaulted(group, plural, obj))
}

fn update(group: &str, plural: &str, new: Value, old: Value) -> Vec<FieldError> {
    validate_update(
        info(group, plural),
        &defaulted(group, plural, new),
        &defaulted(group, plural, old),
    )
}

fn strings(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

/// Asserts exactly one error with the given field and reason, returning it.
#[track_caller]
fn one(errs: &[FieldError], field: &str, reason: &str) -> FieldError {
    let matching: Vec<&FieldError> = errs
        .iter()
        .filter(|e| e.field == field && e.reason() == reason)
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "want one {reason} at {field}, got {:#?}",
        strings(errs)
    );
    matching[0].clone()
}

#[track_caller]
fn ok(errs: &[FieldError]) {
    assert!(errs.is_empty(), "unexpected errors: {:#?}", strings(errs));
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
}

fn container() -> Value {
    json!({"name": "c", "image": "nginx:1.25"})
}

#[test]
fn valid_pod_passes_and_metadata_is_checked() {
    ok(&create(
        "",
        "pods",
        pod(json!({"containers": [container()]})),
    ));
    let errs = create(
        "",
        "pods",
        json!({"metadata": {"name": "Foo_bar", "namespace": "default"}, "spec": {"containers": [container()]}}),
    );
    let e = one(&errs, "metadata.name", "FieldValueInvalid");
    assert!(e.to_string().starts_with(
        "metadata.name: Invalid value: \"Foo_bar\": a lowercase RFC 1123 subdomain must consist of"
    ));
    let errs = create(
        "",
        "pods",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [container()]}}),
    );
    one(&errs, "metadata.namespace", "FieldValueRequired");
}

#[test]
fn pod_containers() {
    let errs = create("", "pods", pod(json!({"containers": []})));
    assert_eq!(
        one(&errs, "spec.containers", "FieldValueRequired").to_string(),
        "spec.containers: Required value"
    );

    let errs = create("", "pods", pod(json!({"containers": [{"name": "c"}]})));
    assert_eq!(
        one(&errs, "spec.containers[0].image", "FieldValueRequired").to_string(),
        "spec.containers[0].image: Required value"
    );

    let errs = create(
        "",
        "pods",
        pod(
            json!({"initContainers": [{"name": "c", "image": "busybox"}], "containers": [container(), {"name": "Bad_Name", "image": "x"}]}),
        ),
    );
    assert_eq!(
        one(&errs, "spec.containers[0].name", "FieldValueDuplicate").message,
        "Duplicate value: \"c\""
    );
    one(&errs, "spec.containers[1].name", "FieldValueInvalid");

    let errs = create(
        "",
        "pods",
        pod(
            json!({"containers": [{"name": "c", "image": "x", "imagePullPolicy": "Sometimes",
            "ports": [{"containerPort": 70000}, {"containerPort": 80, "protocol": "HTTP", "name": "web"},
                      {"containerPort": 81, "name": "web"}, {"containerPort": 82, "name": "a-very-long-port-name"}]}]}),
        ),
    );
    assert_eq!(
        one(&errs, "spec.containers[0].imagePullPolicy", "FieldValueNotSupported").message,
        "Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\""
    );
    assert_eq!(
        one(
            &errs,
            "spec.containers[0].ports[0].containerPort",
            "FieldValueInvalid"
        )
        .message,
        "Invalid value: 70000: must be between 1 and 65535, inclusive"
    );
    assert_eq!(
        one(
            &errs,
            "spec.containers[0].ports[1].protocol",
            "FieldValueNotSupported"
        )
        .message,
        "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
    );
    one(
        &errs,
        "spec.containers[0].ports[2].name",
        "FieldValueDuplicate",
    );
    assert_eq!(
        one(
            &errs,
            "spec.containers[0].ports[3].name",
            "FieldValueInvalid"
        )
        .message,
        "Invalid value: \"a-very-long-port-name\": must be no more than 15 characters"
    );

    let errs = create(
        "",
        "pods",
        pod(json!({"containers": [{"name": "c", "image": "x", "ports": [{"protocol": "TCP"}]}]})),
    );
    one(
        &errs,
        "spec.containers[0].ports[0].containerPort",
        "FieldValueRequired",
    );
}

#[test]
fn pod_policies() {
    let errs = create(
        "",
        "pods",
        pod(
            json!({"restartPolicy": "Sometimes", "dnsPolicy": "Magic", "containers": [container()]}),
        ),
    );
    assert_eq!(
        one(&errs, "spec.restartPolicy", "FieldValueNotSupported").message,
        "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
    );
    assert_eq!(
        one(&errs, "spec.dnsPolicy", "FieldValueNotSupported").message,
        "Unsupported value: \"Magic\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""
    );
    let errs = create(
        "",
        "pods",
        pod(json!({"dnsPolicy": "None", "containers": [container()]})),
    );
    one(&errs, "spec.dnsConfig", "FieldValueRequired");
    let errs = create(
        "",
        "pods",
        pod(json!({"activeDeadlineSeconds": 0, "containers": [container()]})),
    );
    one(&errs, "spec.activeDeadlineSeconds", "FieldValueInvalid");
    let errs = create(
        "",
        "pods",
        pod(json!({"nodeSelector": {"bad key!": "v"}, "containers": [container()]})),
    );
    one(&errs, "spec.nodeSelector", "FieldValueInvalid");
    let errs = create(
        "",
        "pods",
        pod(json!({"containers": [container()], "tolerations": [
            {"operator": "Equal", "value": "x"},
            {"key": "k", "operator": "Exists", "value": "v"},
            {"key": "k", "effect": "Sometimes"},
            {"key": "k", "tolerationSeconds": 5, "effect": "NoSchedule"}
        ]})),
    );
    assert_eq!(
        one(&errs, "spec.tolerations[0].operator", "FieldValueInvalid").message,
        "Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\""
    );
    one(&errs, "spec.tolerations[1].operator", "FieldValueInvalid");
    one(
        &errs,
        "spec.tolerations[2].effect",
        "FieldValueNotSupported",
    );
    one(&errs, "spec.tolerations[3].effect", "FieldValueInvalid");
    let errs = create(
        "",
        "pods",
        pod(
            json!({"hostNetwork": true, "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 81}]}]}),
        ),
    );
    one(
        &errs,
        "spec.containers[0].ports[0].containerPort",
        "FieldValueInvalid",
    );
    let errs = create(
        "",
        "pods",
        pod(
            json!({"containers": [container()], "ephemeralContainers": [{"name": "e", "image": "x"}]}),
        ),
    );
    one(&errs, "spec.ephemeralContainers", "FieldValueForbidden");
}

#[test]
fn pod_volumes_and_mounts() {
    let errs = create(
        "",
        "pods",
        pod(json!({
            "volumes": [
                {"name": "a", "emptyDir": {}},
                {"name": "a", "emptyDir": {}},
                {"name": "b", "emptyDir": {}, "hostPath": {"path": "/x"}},
                {"name": "s", "secret": {}},
                {"name": "h", "hostPath": {"path": "/x", "type": "Weird"}},
                {"name": "Bad"}
            ],
            "containers": [{"name": "c", "image": "x", "volumeMounts": [
                {"name": "a", "mountPath": "/a"}, {"name": "missing", "mountPath": "/b"}, {"name": "a", "mountPath": "/a"}
            ]}]
        })),
    );
    one(&errs, "spec.volumes[1].name", "FieldValueDuplicate");
    assert_eq!(
        one(&errs, "spec.volumes[2].hostPath", "FieldValueForbidden").message,
        "Forbidden: may not specify more than 1 volume type"
    );
    one(
        &errs,
        "spec.volumes[3].secret.secretName",
        "FieldValueRequired",
    );
    one(
        &errs,
        "spec.volumes[4].hostPath.type",
        "FieldValueNotSupported",
    );
    one(&errs, "spec.volumes[5].name", "FieldValueInvalid");
    assert_eq!(
        one(
            &errs,
            "spec.containers[0].volumeMounts[1].name",
            "FieldValueNotFound"
        )
        .message,
        "Not found: \"missing\""
    );
    assert_eq!(
        one(
            &errs,
            "spec.containers[0].volumeMounts[2].mountPath",
            "FieldValueInvalid"
        )
        .message,
        "Invalid value: \"/a\": must be unique"
    );
}

#[test]
fn pod_env_and_resources() {
    let errs = create(
        "",
        "pods",
        pod(json!({"containers": [{"name": "c", "image": "x",
            "env": [{"name": "A=B"}, {"name": "X", "value": "v", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "Y", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}, {"name": ""}],
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "2", "memory": "-1", "bogus": "1"}}}]})),
    );
    one(&errs, "spec.containers[0].env[0].name", "FieldValueInvalid");
    assert_eq!(
        one(
            &errs,
            "spec.containers[0].env[1].valueFrom",
            "FieldValueInvalid"
        )
        .message,
        "Invalid value: \"\": may not be specified when `value` is not empty"
    );
    one(
        &errs,
        "spec.containers[0].env[2].valueFrom.fieldRef.fieldPath",
        "FieldValueNotSupported",
    );
    one(
        &errs,
        "spec.containers[0].env[3].name",
        "FieldValueRequired",
    );
    let cpu = errs
        .iter()
        .find(|e| e.message.contains("cpu limit"))
        .expect("request above limit");
    assert_eq!(
        cpu.to_string(),
        "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"
    );
    one(
        &errs,
        "spec.containers[0].resources.requests[memory]",
        "FieldValueInvalid",
    );
    assert_eq!(
        one(
            &errs,
            "spec.containers[0].resources.requests[bogus]",
            "FieldValueInvalid"
        )
        .message,
        "Invalid value: \"bogus\": must be a standard resource for containers"
    );
    let errs = validate_create(
        info("", "pods"),
        &pod(
            json!({"containers": [{"name": "c", "image": "x", "imagePullPolicy": "Always", "terminationMessagePolicy": "File",
            "resources": {"limits": {"cpu": "many"}}}], "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"}),
        ),
    );
    one(
        &errs,
        "spec.containers[0].resources.limits[cpu]",
        "FieldValueInvalid",
    );
}

#[test]
fn pod_probes() {
    let errs = create(
        "",
        "pods",
        pod(json!({"containers": [{"name": "c", "image": "x",
            "livenessProbe": {"successThreshold": 2, "exec": {"command": ["true"]}},
            "readinessProbe": {"initialDelaySeconds": -1},
            "startupProbe": {"httpGet": {"port": 0}, "tcpSocket": {"port": 80}}}]})),
    );
    one(
        &errs,
        "spec.containers[0].livenessProbe.successThreshold",
        "FieldValueInvalid",
    );
    assert_eq!(
        one(
            &errs,
            "spec.containers[0].readinessProbe",
            "FieldValueRequired"
        )
        .message,
        "Required value: must specify a handler type"
    );
    one(
        &errs,
        "spec.containers[0].readinessProbe.initialDelaySeconds",
        "FieldValueInvalid",
    );
    one(
        &errs,
        "spec.containers[0].startupProbe.httpGet.port",
        "FieldValueInvalid",
    );
    one(
        &errs,
        "spec.containers[0].startupProbe.tcpSocket",
        "FieldValueForbidden",
    );
}

#[test]
fn pod_updates() {
    let old = pod(
        json!({"containers": [container()], "tolerations": [{"key": "a", "operator": "Exists"}]}),
    );
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("nginx:1.26");
    new["spec"]["tolerations"] =
        json!([{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]);
    new["metadata"]["labels"] = json!({"x": "y"});
    ok(&update("", "pods", new, old.clone()));

    let mut new = old.clone();
    new["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
    let errs = update("", "pods", new, old.clone());
    let e = one(&errs, "spec", "FieldValueForbidden");
    assert!(e.message.starts_with(
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"
    ));
    assert!(e.message.contains("containers[0].ports"));

    let mut new = old.clone();
    new["spec"]["tolerations"] = json!([]);
    let errs = update("", "pods", new, old.clone());
    one(&errs, "spec.tolerations", "FieldValueForbidden");

    let mut with_deadline = old.clone();
    with_deadline["spec"]["activeDeadlineSeconds"] = json!(10);
    let mut longer = with_deadline.clone();
    longer["spec"]["activeDeadlineSeconds"] = json!(20);
    let errs = update("", "pods", longer, with_deadline.clone());
    one(&errs, "spec.activeDeadlineSeconds", "FieldValueInvalid");
    let mut shorter = with_deadline.clone();
    shorter["spec"]["activeDeadlineSeconds"] = json!(5);
    ok(&update("", "pods", shorter, with_deadline));

    let mut renamed = old.clone();
    renamed["metadata"]["name"] = json!("q");
    let errs = update("", "pods", renamed, old);
    assert_eq!(
        one(&errs, "metadata.name", "FieldValueInvalid").to_string(),
        "metadata.name: Invalid value: \"q\": field is immutable"
    );
}

#[test]
fn pod_status_updates() {
    let old = defaulted("", "pods", pod(json!({"containers": [container()]})));
    let mut new = old.clone();
    new["status"] =
        json!({"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}]});
    ok(&validate_status_update(info("", "pods"), &new, &old));
    new["status"]["podIPs"] = json!([{"ip": "not-an-ip"}]);
    let errs = validate_status_update(info("", "pods"), &new, &old);
    one(&errs, "status.podIPs[0]", "FieldValueInvalid");
}

fn service(spec: Value) -> Value {
    json!({"metadata": {"name": "svc", "namespace": "default"}, "spec": spec})
}

#[test]
fn services() {
    ok(&create(
        "",
        "services",
        service(json!({"selector": {"app": "a"}, "ports": [{"port": 80}]})),
    ));
    ok(&create(
        "",
        "services",
        service(json!({"clusterIP": "None", "selector": {"app": "a"}})),
    ));
    ok(&create(
        "",
        "services",
        service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]})),
    ));
    ok(&create(
        "",
        "services",
        service(json!({"type": "ExternalName", "externalName": "db.example.com."})),
    ));

    let errs = create("", "services", service(json!({"selector": {"app": "a"}})));
    assert_eq!(
        one(&errs, "spec.ports", "FieldValueRequired").to_string(),
        "spec.ports: Required value"
    );

    let errs = create(
        "",
        "services",
        json!({"metadata": {"name": "1svc", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}),
    );
    assert!(one(&errs, "metadata.name", "FieldValueInvalid")
        .message
        .contains("a DNS-1035 label"));

    let errs = create(
        "",
        "services",
        service(
            json!({"type": "Magic", "ports": [{"port": 80}, {"port": 0, "protocol": "ICMP"}, {"port": 80, "name": "x"}]}),
        ),
    );
    one(&errs, "spec.ports[0].name", "FieldValueRequired");
    one(&errs, "spec.ports[1].port", "FieldValueInvalid");
    one(&errs, "spec.ports[1].protocol", "FieldValueNotSupported");
    one(&errs, "spec.ports[2]", "FieldValueDuplicate");
    assert_eq!(
        one(&errs, "spec.type", "FieldValueNotSupported").message,
        "Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
    );

    let errs = create(
        "",
        "services",
        service(json!({"clusterIP": "10.0.0.300", "ports": [{"port": 80}]})),
    );
    assert_eq!(
        one(&errs, "spec.clusterIPs[0]", "FieldValueInvalid").message,
        "Invalid value: \"10.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
    );

    let errs = create(
        "",
        "services",
        service(json!({"ports": [{"port": 80, "nodePort": 30000}]})),
    );
    one(&errs, "spec.ports[0].nodePort", "FieldValueForbidden");

    let errs = create("", "services", service(json!({"type": "ExternalName"})));
    one(&errs, "spec.externalName", "FieldValueRequired");

    let errs = create(
        "",
        "services",
        service(json!({"selector": {"app": "-bad"}, "ports": [{"port": 80}]})),
    );
    one(&errs, "spec.selector", "FieldValueInvalid");
}

#[test]
fn service_updates() {
    let old = service(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
    let same = service(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 81}]}));
    ok(&update("", "services", same, old.clone()));
    let moved = service(json!({"clusterIP": "10.96.0.11", "ports": [{"port": 80}]}));
    let errs = update("", "services", moved, old.clone());
    assert_eq!(
        one(&errs, "spec.clusterIPs[0]", "FieldValueInvalid").message,
        "Invalid value: []string{\"10.96.0.11\"}: may not change once set"
    );
    let external = service(json!({"type": "ExternalName", "externalName": "x.example.com"}));
    ok(&update("", "services", external, old));
}

fn apps_template(labels: Value) -> Value {
    json!({"metadata": {"labels": labels}, "spec": {"containers": [container()]}})
}

fn deployment(spec: Value) -> Value {
    json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

#[test]
fn deployments() {
    let good = deployment(
        json!({"selector": {"matchLabels": {"app": "web"}}, "template": apps_template(json!({"app": "web"}))}),
    );
    ok(&create("apps", "deployments", good.clone()));

    let errs = create(
        "apps",
        "deployments",
        deployment(json!({"template": apps_template(json!({"app": "web"}))})),
    );
    assert_eq!(
        strings(&errs),
        vec![
            "spec.selector: Required value".to_string(),
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`".to_string(),
        ]
    );
    assert_eq!(
        invalid_status_message("apps", "Deployment", "web", &errs),
        "Deployment.apps \"web\" is invalid: [spec.selector: Required value, spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`]"
    );

    let errs = create(
        "apps",
        "deployments",
        deployment(
            json!({"selector": {"matchLabels": {"app": "db"}}, "template": apps_template(json!({"app": "web"}))}),
        ),
    );
    assert_eq!(
        one(&errs, "spec.template.metadata.labels", "FieldValueInvalid").message,
        "Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"
    );

    let errs = create(
        "apps",
        "deployments",
        deployment(json!({"selector": {}, "template": apps_template(json!({"app": "web"}))})),
    );
    assert!(one(&errs, "spec.selector", "FieldValueInvalid")
        .message
        .ends_with("empty selector is invalid for deployment"));

    let errs = create(
        "apps",
        "deployments",
        deployment(
            json!({"replicas": -1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"restartPolicy": "Never", "containers": [container()]}},
            "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}),
        ),
    );
    assert_eq!(
        one(&errs, "spec.replicas", "FieldValueInvalid").to_string(),
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    );
    assert_eq!(
        one(
            &errs,
            "spec.template.spec.restartPolicy",
            "FieldValueNotSupported"
        )
        .message,
        "Unsupported value: \"Never\": supported values: \"Always\""
    );
    one(
        &errs,
        "spec.strategy.rollingUpdate.maxUnavailable",
        "FieldValueInvalid",
    );

    let mut moved = good.clone();
    moved["spec"]["selector"] = json!({"matchLabels": {"app": "web", "tier": "x"}});
    moved["spec"]["template"]["metadata"]["labels"] = json!({"app": "web", "tier": "x"});
    let errs = update("apps", "deployments", moved, good.clone());
    let e = one(&errs, "spec.selector", "FieldValueInvalid");
    assert_eq!(
        e.to_string(),
        "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"tier\":\"x\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
    );
    let mut scaled = good.clone();
    scaled["spec"]["replicas"] = json!(5);
    ok(&update("apps", "deployments", scaled, good));
}

#[test]
fn replica_sets_daemon_sets_and_rcs() {
    let rs = json!({"metadata": {"name": "rs", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": apps_template(json!({"app": "a"}))}});
    ok(&create("apps", "replicasets", rs.clone()));
    let mut bad = rs.clone();
    bad["spec"]["template"]["spec"]["activeDeadlineSeconds"] = json!(5);
    let errs = create("apps", "replicasets", bad);
    one(
        &errs,
        "spec.template.spec.activeDeadlineSeconds",
        "FieldValueInvalid",
    );

    let ds = json!({"metadata": {"name": "ds", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": apps_template(json!({"app": "a"}))}});
    ok(&create("apps", "daemonsets", ds.clone()));
    let mut bad = ds.clone();
    bad["spec"]["updateStrategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}});
    let errs = create("apps", "daemonsets", bad);
    assert_eq!(
        one(
            &errs,
            "spec.updateStrategy.rollingUpdate.maxUnavailable",
            "FieldValueRequired"
        )
        .message,
        "Required value: cannot be 0 when maxSurge is 0"
    );
    let mut bad = ds.clone();
    bad["spec"]["template"]["metadata"]["labels"] = json!({"app": "b"});
    one(
        &create("apps", "daemonsets", bad),
        "spec.template.metadata.labels",
        "FieldValueInvalid",
    );

    let rc = json!({"metadata": {"name": "rc", "namespace": "default"}, "spec": {"template": apps_template(json!({"app": "a"}))}});
    ok(&create("", "replicationcontrollers", rc));
    let rc = json!({"metadata": {"name": "rc", "namespace": "default"}, "spec": {"selector": {"app": "b"}, "template": apps_template(json!({"app": "a"}))}});
    one(
        &create("", "replicationcontrollers", rc),
        "spec.template.metadata.labels",
        "FieldValueInvalid",
    );
}

#[test]
fn stateful_sets() {
    let sts = json!({"metadata": {"name": "db", "namespace": "default"},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": apps_template(json!({"app": "db"})),
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}});
    ok(&create("apps", "statefulsets", sts.clone()));
    let mut bad = sts.clone();
    bad["spec"]["podManagementPolicy"] = json!("Random");
    one(
        &create("apps", "statefulsets", bad),
        "spec.podManagementPolicy",
        "FieldValueInvalid",
    );

    let mut scaled = sts.clone();
    scaled["spec"]["replicas"] = json!(3);
    scaled["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    ok(&update("apps", "statefulsets", scaled, sts.clone()));
    let mut renamed = sts.clone();
    renamed["spec"]["serviceName"] = json!("other");
    let errs = update("apps", "statefulsets", renamed, sts);
    assert!(one(&errs, "spec", "FieldValueForbidden")
        .message
        .starts_with("Forbidden: updates to statefulset spec for fields other than 'replicas'"));
}

fn job(template_spec: Value) -> Value {
    json!({"metadata": {"name": "j", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"job": "j"}}, "template": {"metadata": {"labels": {"job": "j"}}, "spec": template_spec}}})
}

#[test]
fn jobs() {
    ok(&create(
        "batch",
        "jobs",
        job(json!({"restartPolicy": "Never", "containers": [container()]})),
    ));
    let errs = create("batch", "jobs", job(json!({"containers": [container()]})));
    assert_eq!(
        one(
            &errs,
            "spec.template.spec.restartPolicy",
            "FieldValueRequired"
        )
        .to_string(),
        "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""
    );
    let mut unselected = job(json!({"restartPolicy": "OnFailure", "containers": [container()]}));
    unselected["spec"]["selector"] = Value::Null;
    one(
        &create("batch", "jobs", unselected),
        "spec.selector",
        "FieldValueRequired",
    );
    let mut mismatch = job(json!({"restartPolicy": "OnFailure", "containers": [container()]}));
    mismatch["spec"]["manualSelector"] = json!(true);
    mismatch["spec"]["selector"] = json!({"matchLabels": {"job": "other"}});
    one(
        &create("batch", "jobs", mismatch),
        "spec.template.metadata.labels",
        "FieldValueInvalid",
    );
    let errs = create("batch", "jobs", {
        let mut j = job(json!({"restartPolicy": "Never", "containers": [container()]}));
        j["spec"]["completionMode"] = json!("Indexed");
        j["spec"]["parallelism"] = json!(2);
        j
    });
    one(&errs, "spec.completions", "FieldValueRequired");

    let old = job(json!({"restartPolicy": "Never", "containers": [container()]}));
    let mut new = old.clone();
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("other");
    let errs = update("batch", "jobs", new, old.clone());
    assert!(one(&errs, "spec.template", "FieldValueInvalid")
        .message
        .ends_with("field is immutable"));
    let mut suspended_old = old.clone();
    suspended_old["spec"]["suspend"] = json!(true);
    let mut relabelled = suspended_old.clone();
    relabelled["spec"]["template"]["spec"]["nodeSelector"] = json!({"zone": "a"});
    ok(&update("batch", "jobs", relabelled, suspended_old));
}

fn cron_job(name: &str, schedule: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "default"},
        "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [container()]}}}}}})
}

#[test]
fn cron_jobs() {
    ok(&create(
        "batch",
        "cronjobs",
        cron_job("nightly", "0 3 * * *"),
    ));
    ok(&create("batch", "cronjobs", cron_job("hourly", "@hourly")));
    let errs = create("batch", "cronjobs", cron_job("c", ""));
    one(&errs, "spec.schedule", "FieldValueRequired");
    let errs = create("batch", "cronjobs", cron_job("c", "61 * * * *"));
    assert_eq!(
        one(&errs, "spec.schedule", "FieldValueInvalid").message,
        "Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61"
    );
    let errs = create("batch", "cronjobs", cron_job("c", "TZ=UTC 0 * * * *"));
    assert!(one(&errs, "spec.schedule", "FieldValueInvalid")
        .message
        .ends_with("cannot use TZ or CRON_TZ in schedule, use timeZone field instead"));
    let errs = create("batch", "cronjobs", cron_job(&"c".repeat(53), "@daily"));
    assert_eq!(
        one(&errs, "metadata.name", "FieldValueInvalid").message,
        format!(
            "Invalid value: \"{}\": must be no more than 52 characters",
            "c".repeat(53)
        )
    );
    let mut bad = cron_job("c", "@daily");
    bad["spec"]["concurrencyPolicy"] = json!("Sometimes");
    bad["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    let errs = create("batch", "cronjobs", bad);
    one(&errs, "spec.concurrencyPolicy", "FieldValueNotSupported");
    one(
        &errs,
        "spec.jobTemplate.spec.template.spec.restartPolicy",
        "FieldValueRequired",
    );
}

#[test]
fn config_maps_and_secrets() {
    let cm = json!({"metadata": {"name": "c", "namespace": "default"}, "data": {"good.key": "v", "bad/key": "v", "dup": "x"}, "binaryData": {"dup": "eA=="}});
    let errs = create("", "configmaps", cm);
    one(&errs, "data[bad/key]", "FieldValueInvalid");
    assert_eq!(
        one(&errs, "data[dup]", "FieldValueInvalid").message,
        "Invalid value: \"dup\": duplicate of key present in binaryData"
    );
    let big = json!({"metadata": {"name": "c", "namespace": "default"}, "data": {"k": "x".repeat(1024 * 1024 + 1)}});
    assert_eq!(
        one(&create("", "configmaps", big), "", "FieldValueTooLong").to_string(),
        ": Too long: may not be more than 1048576 bytes"
    );

    let old = json!({"metadata": {"name": "c", "namespace": "default"}, "data": {"k": "v"}, "immutable": true});
    let mut new = old.clone();
    new["data"]["k"] = json!("w");
    let errs = update("", "configmaps", new, old);
    assert_eq!(
        one(&errs, "data", "FieldValueForbidden").message,
        "Forbidden: field is immutable when `immutable` is set"
    );

    let tls = json!({"metadata": {"name": "s", "namespace": "default"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
    one(
        &create("", "secrets", tls),
        "data[tls.key]",
        "FieldValueRequired",
    );
    let opaque =
        json!({"metadata": {"name": "s", "namespace": "default"}, "stringData": {"a": "b"}});
    ok(&create("", "secrets", opaque.clone()));
    let mut retyped = opaque.clone();
    retyped["type"] = json!("kubernetes.io/basic-auth");
    retyped["stringData"] = json!({"username": "u"});
    one(
        &update("", "secrets", retyped, opaque),
        "type",
        "FieldValueInvalid",
    );
}

#[test]
fn namespaces_nodes_and_leases() {
    ok(&create(
        "",
        "namespaces",
        json!({"metadata": {"name": "team-a"}}),
    ));
    let errs = create("", "namespaces", json!({"metadata": {"name": "team.a"}}));
    assert!(one(&errs, "metadata.name", "FieldValueInvalid")
        .message
        .contains("RFC 1123 label"));
    let errs = create(
        "",
        "namespaces",
        json!({"metadata": {"name": "x", "namespace": "y"}}),
    );
    one(&errs, "metadata.namespace", "FieldValueForbidden");
    let old = defaulted("", "namespaces", json!({"metadata": {"name": "x"}}));
    let mut new = old.clone();
    new["status"]["phase"] = json!("Terminating");
    one(
        &validate_status_update(info("", "namespaces"), &new, &old),
        "status.Phase",
        "FieldValueInvalid",
    );

    ok(&create(
        "",
        "nodes",
        json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.244.0.0/24"]}}),
    ));
    let errs = create(
        "",
        "nodes",
        json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "k", "effect": "Sometimes"}, {"key": "k", "effect": "NoSchedule"}, {"key": "k", "effect": "NoSchedule"}]}}),
    );
    one(&errs, "spec.taints[0].effect", "FieldValueNotSupported");
    one(&errs, "spec.taints[2]", "FieldValueDuplicate");
    let old = json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.244.0.0/24"]}});
    let new = json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.244.1.0/24"]}});
    one(
        &update("", "nodes", new, old),
        "spec.podCIDRs",
        "FieldValueForbidden",
    );

    let lease = json!({"metadata": {"name": "l", "namespace": "kube-node-lease"}, "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 0}});
    assert_eq!(
        one(
            &create("coordination.k8s.io", "leases", lease),
            "spec.leaseDurationSeconds",
            "FieldValueInvalid"
        )
        .message,
        "Invalid value: 0: must be greater than 0"
    );
}

#[test]
fn volumes_and_claims() {
    let pvc = json!({"metadata": {"name": "c", "namespace": "default"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    ok(&create("", "persistentvolumeclaims", pvc.clone()));
    let errs = create(
        "",
        "persistentvolumeclaims",
        json!({"metadata": {"name": "c", "namespace": "default"}, "spec": {}}),
    );
    assert_eq!(
        one(&errs, "spec.accessModes", "FieldValueRequired").message,
        "Required value: at least 1 access mode is required"
    );
    assert_eq!(
        one(&errs, "spec.resources[storage]", "FieldValueRequired").to_string(),
        "spec.resources[storage]: Required value"
    );
    let mut changed = pvc.clone();
    changed["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    one(
        &update("", "persistentvolumeclaims", changed, pvc),
        "spec",
        "FieldValueForbidden",
    );

    let pv = json!({"metadata": {"name": "pv"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/data"}}});
    ok(&create("", "persistentvolumes", pv.clone()));
    let errs = create(
        "",
        "persistentvolumes",
        json!({"metadata": {"name": "pv"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}}),
    );
    assert_eq!(
        one(&errs, "spec", "FieldValueRequired").message,
        "Required value: must specify a volume type"
    );
    let mut moved = pv.clone();
    moved["spec"]["hostPath"]["path"] = json!("/other");
    one(
        &update("", "persistentvolumes", moved, pv),
        "spec.persistentvolumesource",
        "FieldValueForbidden",
    );
}

#[test]
fn endpoint_slices_and_endpoints() {
    let slice = json!({"metadata": {"name": "s-1", "namespace": "default"}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"name": "http", "port": 80}]});
    ok(&create("discovery.k8s.io", "endpointslices", slice.clone()));
    let errs = create(
        "discovery.k8s.io",
        "endpointslices",
        json!({"metadata": {"name": "s", "namespace": "default"}, "addressType": "IPv5",
               "endpoints": [{"addresses": []}]}),
    );
    assert_eq!(
        one(&errs, "addressType", "FieldValueNotSupported").message,
        "Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""
    );
    one(&errs, "endpoints[0].addresses", "FieldValueRequired");
    let errs = create(
        "discovery.k8s.io",
        "endpointslices",
        json!({"metadata": {"name": "s", "namespace": "default"}, "addressType": "IPv4",
               "endpoints": [{"addresses": ["fd00::1"]}, {"addresses": ["127.0.0.1"]}]}),
    );
    assert_eq!(
        one(&errs, "endpoints[0].addresses[0]", "FieldValueInvalid").message,
        "Invalid value: \"fd00::1\": must be a valid IPv4 address"
    );
    one(&errs, "endpoints[1].addresses[0]", "FieldValueInvalid");
    let mut v6 = slice.clone();
    v6["addressType"] = json!("IPv6");
    v6["endpoints"] = json!([{"addresses": ["fd00::1"]}]);
    one(
        &update("discovery.k8s.io", "endpointslices", v6, slice),
        "addressType",
        "FieldValueInvalid",
    );

    let ep = json!({"metadata": {"name": "e", "namespace": "default"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}, {"port": 81}]}]});
    one(
        &create("", "endpoints", ep),
        "subsets[0].ports[0].name",
        "FieldValueRequired",
    );
}

#[test]
fn policy_objects() {
    let pdb = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"minAvailable": 1, "maxUnavailable": "10%", "selector": {"matchLabels": {"a": "b"}}}});
    assert!(one(
        &create("policy", "poddisruptionbudgets", pdb),
        "spec",
        "FieldValueInvalid"
    )
    .message
    .ends_with("minAvailable and maxUnavailable cannot be both set"));
    let pdb = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"maxUnavailable": "150%"}});
    one(
        &create("policy", "poddisruptionbudgets", pdb),
        "spec.maxUnavailable",
        "FieldValueInvalid",
    );

    ok(&create(
        "scheduling.k8s.io",
        "priorityclasses",
        json!({"metadata": {"name": "high"}, "value": 1000}),
    ));
    let errs = create(
        "scheduling.k8s.io",
        "priorityclasses",
        json!({"metadata": {"name": "huge"}, "value": 1_000_000_001}),
    );
    assert_eq!(
        one(&errs, "value", "FieldValueForbidden").message,
        "Forbidden: maximum allowed value of a user defined priority is 1000000000"
    );
    let errs = create(
        "scheduling.k8s.io",
        "priorityclasses",
        json!({"metadata": {"name": "system-mine"}, "value": 10}),
    );
    one(&errs, "metadata.name", "FieldValueForbidden");
    let errs = update(
        "scheduling.k8s.io",
        "priorityclasses",
        json!({"metadata": {"name": "high"}, "value": 2}),
        json!({"metadata": {"name": "high"}, "value": 1}),
    );
    assert_eq!(
        one(&errs, "value", "FieldValueForbidden").message,
        "Forbidden: may not be changed in an update."
    );

    ok(&create(
        "node.k8s.io",
        "runtimeclasses",
        json!({"metadata": {"name": "gvisor"}, "handler": "runsc"}),
    ));
    let errs = create(
        "node.k8s.io",
        "runtimeclasses",
        json!({"metadata": {"name": "x"}, "handler": "Run_SC"}),
    );
    one(&errs, "handler", "FieldValueInvalid");
}

#[test]
fn ingresses_and_network_policies() {
    let ing = json!({"metadata": {"name": "i", "namespace": "default"}, "spec": {"rules": [{"host": "example.com", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
    ok(&create("networking.k8s.io", "ingresses", ing));
    let errs = create(
        "networking.k8s.io",
        "ingresses",
        json!({"metadata": {"name": "i", "namespace": "default"}, "spec": {"rules": [{"host": "10.0.0.1", "http": {"paths": [
            {"path": "/", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
            {"path": "x", "pathType": "Exact", "backend": {"service": {"name": "web"}}}]}}]}}),
    );
    one(&errs, "spec.rules[0].host", "FieldValueInvalid");
    assert_eq!(
        one(
            &errs,
            "spec.rules[0].http.paths[0].pathType",
            "FieldValueRequired"
        )
        .message,
        "Required value: pathType must be specified"
    );
    one(
        &errs,
        "spec.rules[0].http.paths[1].path",
        "FieldValueInvalid",
    );
    one(
        &errs,
        "spec.rules[0].http.paths[1].backend",
        "FieldValueRequired",
    );
    let errs = create(
        "networking.k8s.io",
        "ingresses",
        json!({"metadata": {"name": "i", "namespace": "default"}, "spec": {}}),
    );
    one(&errs, "spec", "FieldValueInvalid");

    let np = json!({"metadata": {"name": "n", "namespace": "default"}, "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 80}]}]}});
    ok(&create("networking.k8s.io", "networkpolicies", np));
    let errs = create(
        "networking.k8s.io",
        "networkpolicies",
        json!({"metadata": {"name": "n", "namespace": "default"}, "spec": {"podSelector": {},
            "ingress": [{"from": [{}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}, "podSelector": {}}],
                         "ports": [{"protocol": "ICMP", "port": 80}, {"port": "http", "endPort": 90}]}]}}),
    );
    assert_eq!(
        one(&errs, "spec.ingress[0].from[0]", "FieldValueRequired").message,
        "Required value: must specify a peer"
    );
    one(&errs, "spec.ingress[0].from[1]", "FieldValueForbidden");
    one(
        &errs,
        "spec.ingress[0].from[1].ipBlock.except[0]",
        "FieldValueInvalid",
    );
    one(
        &errs,
        "spec.ingress[0].ports[0].protocol",
        "FieldValueNotSupported",
    );
    one(
        &errs,
        "spec.ingress[0].ports[1].endPort",
        "FieldValueInvalid",
    );

    ok(&create(
        "networking.k8s.io",
        "ingressclasses",
        json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}),
    ));
    let errs = create(
        "networking.k8s.io",
        "ingressclasses",
        json!({"metadata": {"name": "nginx"}, "spec": {"controller": "nginx"}}),
    );
    one(&errs, "spec.controller", "FieldValueInvalid");
}

#[test]
fn events() {
    let legacy = json!({"metadata": {"name": "e.1", "namespace": "default"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Started"});
    ok(&create("", "events", legacy.clone()));
    let mut other_ns = legacy.clone();
    other_ns["involvedObject"]["namespace"] = json!("other");
    assert_eq!(
        one(
            &create("", "events", other_ns),
            "involvedObject.namespace",
            "FieldValueInvalid"
        )
        .message,
        "Invalid value: \"other\": does not match event.namespace"
    );
    let v1 = json!({"metadata": {"name": "e", "namespace": "default"}, "eventTime": "2024-01-01T00:00:00.000000Z",
        "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Started", "action": "Start",
        "reportingController": "example.com/ctl", "reportingInstance": "i", "type": "Normal"});
    ok(&create("events.k8s.io", "events", v1.clone()));
    let mut bad = v1.clone();
    bad["type"] = json!("Odd");
    bad["action"] = json!("");
    let errs = create("events.k8s.io", "events", bad);
    one(&errs, "type", "FieldValueInvalid");
    one(&errs, "action", "FieldValueRequired");
    let mut changed = v1.clone();
    changed["reason"] = json!("Other");
    one(
        &update("events.k8s.io", "events", changed, v1),
        "reason",
        "FieldValueInvalid",
    );
}

#[test]
fn status_updates_check_counters() {
    let d = deployment(
        json!({"selector": {"matchLabels": {"app": "web"}}, "template": apps_template(json!({"app": "web"}))}),
    );
    let old = defaulted("apps", "deployments", d);
    let mut new = old.clone();
    new["status"] = json!({"replicas": -1, "readyReplicas": 1});
    let errs = validate_status_update(info("apps", "deployments"), &new, &old);
    assert_eq!(
        strings(&errs),
        vec!["status.replicas: Invalid value: -1: must be greater than or equal to 0"]
    );
}

#[test]
fn decode_failures_are_reported() {
    let errs = validate_create(info("", "pods"), &json!({"metadata": {"name": 5}}));
    assert_eq!(errs.len(), 1);
    assert!(errs[0]
        .message
        .contains("Pod in version \"v1\" cannot be handled as a Pod"));
}
