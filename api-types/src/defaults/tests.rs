use serde_json::{json, Value};

use super::*;
use crate::resources::find;

fn defaulted(group: &str, plural: &str, mut obj: Value) -> Value {
    let info = find(group, "v1", plural).unwrap();
    apply_defaults(info, &mut obj).unwrap();
    obj
}

fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer)
        .unwrap_or_else(|| panic!("missing {pointer} in {v:#}"))
}

#[test]
fn pod_defaults_match_upstream() {
    let pod = defaulted(
        "",
        "pods",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {
                "containers": [{
                    "name": "c", "image": "nginx",
                    "ports": [{"containerPort": 80}],
                    "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "livenessProbe": {"httpGet": {"port": 80}},
                    "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 5},
                    "resources": {"limits": {"cpu": "0.5", "memory": "128974848"}}
                }, {"name": "d", "image": "nginx:1.25"}, {"name": "e", "image": "nginx@sha256:abcd"}],
                "volumes": [
                    {"name": "none"},
                    {"name": "s", "secret": {"secretName": "x"}},
                    {"name": "cm", "configMap": {"name": "x"}},
                    {"name": "h", "hostPath": {"path": "/tmp"}},
                    {"name": "pr", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}
                ]
            }
        }),
    );
    let spec = at(&pod, "/spec");
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["securityContext"], json!({}));
    assert_eq!(spec["enableServiceLinks"], true);
    let c = at(&pod, "/spec/containers/0");
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    assert_eq!(
        c["livenessProbe"],
        json!({"httpGet": {"path": "/", "port": 80, "scheme": "HTTP"}, "timeoutSeconds": 1,
               "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(c["readinessProbe"]["periodSeconds"], 5);
    assert_eq!(c["resources"]["limits"]["cpu"], "500m");
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "500m", "memory": "128974848"})
    );
    assert_eq!(
        at(&pod, "/spec/containers/1/imagePullPolicy"),
        "IfNotPresent"
    );
    assert_eq!(
        at(&pod, "/spec/containers/2/imagePullPolicy"),
        "IfNotPresent"
    );
    assert_eq!(at(&pod, "/spec/volumes/0/emptyDir"), &json!({}));
    assert_eq!(at(&pod, "/spec/volumes/1/secret/defaultMode"), 420);
    assert_eq!(at(&pod, "/spec/volumes/2/configMap/defaultMode"), 420);
    assert_eq!(at(&pod, "/spec/volumes/3/hostPath/type"), "");
    assert_eq!(at(&pod, "/spec/volumes/4/projected/defaultMode"), 420);
    assert_eq!(
        at(
            &pod,
            "/spec/volumes/4/projected/sources/0/serviceAccountToken/expirationSeconds"
        ),
        3600
    );
    assert!(pod.pointer("/spec/preemptionPolicy").is_none());
    assert!(pod.pointer("/spec/priority").is_none());
}

#[test]
fn pod_keeps_explicit_values_and_host_network_ports() {
    let pod = defaulted(
        "",
        "pods",
        json!({
            "metadata": {"name": "p"},
            "spec": {
                "hostNetwork": true, "restartPolicy": "Never", "enableServiceLinks": false,
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": "nginx", "imagePullPolicy": "Never",
                                "ports": [{"containerPort": 8080, "protocol": "UDP"}]}]
            }
        }),
    );
    assert_eq!(at(&pod, "/spec/restartPolicy"), "Never");
    assert_eq!(at(&pod, "/spec/enableServiceLinks"), false);
    assert_eq!(at(&pod, "/spec/terminationGracePeriodSeconds"), 0);
    assert_eq!(at(&pod, "/spec/containers/0/imagePullPolicy"), "Never");
    assert_eq!(at(&pod, "/spec/containers/0/ports/0/protocol"), "UDP");
    assert_eq!(at(&pod, "/spec/containers/0/ports/0/hostPort"), 8080);
}

#[test]
fn decode_errors_read_like_upstream() {
    let info = find("", "v1", "pods").unwrap();
    let mut bad = json!({"spec": {"containers": "nope"}});
    let err = apply_defaults(info, &mut bad).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("Pod in version \"v1\" cannot be handled as a Pod: "));
    let mut bad_quantity =
        json!({"spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "lots"}}}]}});
    assert_eq!(
        apply_defaults(info, &mut bad_quantity).unwrap_err().to_string(),
        "Pod in version \"v1\" cannot be handled as a Pod: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    );
}

#[test]
fn unknown_kinds_are_untouched() {
    let info = crate::resources::ResourceInfo {
        group: "example.com",
        kind: "Widget",
        ..*find("", "v1", "pods").unwrap()
    };
    let mut obj = json!({"spec": {"anything": 1}});
    apply_defaults(&info, &mut obj).unwrap();
    assert_eq!(obj, json!({"spec": {"anything": 1}}));
}

#[test]
fn service_defaults() {
    let svc = defaulted(
        "",
        "services",
        json!({"metadata": {"name": "s"}, "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}}),
    );
    let spec = at(&svc, "/spec");
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["ports"][0]["protocol"], "TCP");
    assert_eq!(spec["ports"][0]["targetPort"], 80);
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert!(spec.get("externalTrafficPolicy").is_none());
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert!(spec.get("clusterIP").is_none());

    let lb = defaulted(
        "",
        "services",
        json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP",
               "ports": [{"port": 80, "targetPort": "http"}]}}),
    );
    let spec = at(&lb, "/spec");
    assert_eq!(spec["externalTrafficPolicy"], "Cluster");
    assert_eq!(spec["allocateLoadBalancerNodePorts"], true);
    assert_eq!(spec["ports"][0]["targetPort"], "http");
    assert_eq!(
        spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        10800
    );

    let ext = defaulted(
        "",
        "services",
        json!({"metadata": {"name": "s"}, "spec": {"type": "ExternalName", "externalName": "x.example.com"}}),
    );
    assert!(ext.pointer("/spec/ipFamilies").is_none());
    assert!(ext.pointer("/spec/internalTrafficPolicy").is_none());

    let v6 = defaulted(
        "",
        "services",
        json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "fd00::10", "ports": [{"port": 80}]}}),
    );
    assert_eq!(at(&v6, "/spec/clusterIPs"), &json!(["fd00::10"]));
    assert_eq!(at(&v6, "/spec/ipFamilies"), &json!(["IPv6"]));
}

#[test]
fn workload_defaults() {
    let template = json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
    let d = defaulted(
        "apps",
        "deployments",
        json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": template}}),
    );
    assert_eq!(at(&d, "/spec/replicas"), 1);
    assert_eq!(
        at(&d, "/spec/strategy"),
        &json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    assert_eq!(at(&d, "/spec/revisionHistoryLimit"), 10);
    assert_eq!(at(&d, "/spec/progressDeadlineSeconds"), 600);
    assert_eq!(at(&d, "/spec/template/spec/restartPolicy"), "Always");
    assert_eq!(
        at(&d, "/spec/template/spec/containers/0/imagePullPolicy"),
        "IfNotPresent"
    );
    assert!(d
        .pointer("/spec/template/spec/enableServiceLinks")
        .is_none());

    let recreate = defaulted(
        "apps",
        "deployments",
        json!({"spec": {"strategy": {"type": "Recreate"}}}),
    );
    assert!(recreate.pointer("/spec/strategy/rollingUpdate").is_none());
    assert_eq!(
        at(&recreate, "/spec/template/spec/dnsPolicy"),
        "ClusterFirst"
    );

    let rs = defaulted(
        "apps",
        "replicasets",
        json!({"spec": {"template": template}}),
    );
    assert_eq!(at(&rs, "/spec/replicas"), 1);

    let sts = defaulted(
        "apps",
        "statefulsets",
        json!({"spec": {"template": template, "volumeClaimTemplates": [{"metadata": {"name": "data"},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}),
    );
    assert_eq!(at(&sts, "/spec/replicas"), 1);
    assert_eq!(at(&sts, "/spec/podManagementPolicy"), "OrderedReady");
    assert_eq!(
        at(&sts, "/spec/updateStrategy"),
        &json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(at(&sts, "/spec/revisionHistoryLimit"), 10);
    assert_eq!(
        at(&sts, "/spec/persistentVolumeClaimRetentionPolicy"),
        &json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    assert_eq!(
        at(&sts, "/spec/volumeClaimTemplates/0/spec/volumeMode"),
        "Filesystem"
    );
    assert_eq!(
        at(&sts, "/spec/volumeClaimTemplates/0/status/phase"),
        "Pending"
    );

    let on_delete = defaulted(
        "apps",
        "statefulsets",
        json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}),
    );
    assert!(on_delete
        .pointer("/spec/updateStrategy/rollingUpdate")
        .is_none());

    let ds = defaulted(
        "apps",
        "daemonsets",
        json!({"spec": {"template": template}}),
    );
    assert_eq!(
        at(&ds, "/spec/updateStrategy"),
        &json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    assert_eq!(at(&ds, "/spec/revisionHistoryLimit"), 10);

    let rc = defaulted(
        "",
        "replicationcontrollers",
        json!({"metadata": {"name": "rc"}, "spec": {"template": template}}),
    );
    assert_eq!(at(&rc, "/spec/replicas"), 1);
    assert_eq!(at(&rc, "/spec/selector"), &json!({"app": "a"}));
    assert_eq!(at(&rc, "/metadata/labels"), &json!({"app": "a"}));
}

#[test]
fn batch_defaults() {
    let job = defaulted(
        "batch",
        "jobs",
        json!({"metadata": {"name": "j"}, "spec": {"template": {"metadata": {"labels": {"x": "y"}},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
    );
    let spec = at(&job, "/spec");
    assert_eq!(spec["completions"], 1);
    assert_eq!(spec["parallelism"], 1);
    assert_eq!(spec["backoffLimit"], 6);
    assert_eq!(spec["completionMode"], "NonIndexed");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
    assert_eq!(spec["manualSelector"], false);
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(at(&job, "/metadata/labels"), &json!({"x": "y"}));

    let parallel = defaulted("batch", "jobs", json!({"spec": {"parallelism": 3}}));
    assert!(parallel.pointer("/spec/completions").is_none());
    assert_eq!(at(&parallel, "/spec/parallelism"), 3);

    let cj = defaulted(
        "batch",
        "cronjobs",
        json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "b"}]}}}}}}),
    );
    let spec = at(&cj, "/spec");
    assert_eq!(spec["concurrencyPolicy"], "Allow");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["successfulJobsHistoryLimit"], 3);
    assert_eq!(spec["failedJobsHistoryLimit"], 1);
    assert_eq!(
        spec["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
        "ClusterFirst"
    );
    assert!(spec["jobTemplate"]["spec"].get("backoffLimit").is_none());
}

#[test]
fn core_kind_defaults() {
    let ns = defaulted("", "namespaces", json!({"metadata": {"name": "team-a"}}));
    assert_eq!(at(&ns, "/spec/finalizers"), &json!(["kubernetes"]));
    assert_eq!(at(&ns, "/status/phase"), "Active");
    assert_eq!(
        at(&ns, "/metadata/labels/kubernetes.io~1metadata.name"),
        "team-a"
    );
    let terminating = defaulted(
        "",
        "namespaces",
        json!({"metadata": {"name": "t", "deletionTimestamp": "2024-01-01T00:00:00Z"},
               "spec": {"finalizers": []}, "status": {"phase": "Terminating"}}),
    );
    assert_eq!(at(&terminating, "/spec/finalizers"), &json!([]));
    assert_eq!(at(&terminating, "/status/phase"), "Terminating");

    let secret = defaulted(
        "",
        "secrets",
        json!({"metadata": {"name": "s"}, "data": {"a": "YQ=="}, "stringData": {"b": "bee"}}),
    );
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret["data"], json!({"a": "YQ==", "b": "YmVl"}));
    assert!(secret.get("stringData").is_none());

    let pv = defaulted(
        "",
        "persistentvolumes",
        json!({"metadata": {"name": "pv"}, "spec": {"capacity": {"storage": "1Gi"}, "hostPath": {"path": "/d"}}}),
    );
    assert_eq!(at(&pv, "/spec/persistentVolumeReclaimPolicy"), "Retain");
    assert_eq!(at(&pv, "/spec/volumeMode"), "Filesystem");
    assert_eq!(at(&pv, "/status/phase"), "Pending");
    assert_eq!(at(&pv, "/spec/hostPath/type"), "");

    let pvc = defaulted(
        "",
        "persistentvolumeclaims",
        json!({"metadata": {"name": "c"}, "spec": {}}),
    );
    assert_eq!(at(&pvc, "/spec/volumeMode"), "Filesystem");
    assert_eq!(at(&pvc, "/status/phase"), "Pending");

    let ep = defaulted(
        "",
        "endpoints",
        json!({"subsets": [{"ports": [{"port": 80}]}]}),
    );
    assert_eq!(at(&ep, "/subsets/0/ports/0/protocol"), "TCP");

    let node = defaulted(
        "",
        "nodes",
        json!({"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "4", "memory": "8Gi"}}}),
    );
    assert_eq!(
        at(&node, "/status/allocatable"),
        &json!({"cpu": "4", "memory": "8Gi"})
    );

    let lr = defaulted(
        "",
        "limitranges",
        json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}]}}),
    );
    assert_eq!(at(&lr, "/spec/limits/0/default"), &json!({"cpu": "2"}));
    assert_eq!(
        at(&lr, "/spec/limits/0/defaultRequest"),
        &json!({"cpu": "2", "memory": "64Mi"})
    );

    let cm = defaulted(
        "",
        "configmaps",
        json!({"metadata": {"name": "c"}, "data": {"k": "v"}}),
    );
    assert_eq!(cm["data"], json!({"k": "v"}));
}

#[test]
fn other_group_defaults() {
    let slice = defaulted(
        "discovery.k8s.io",
        "endpointslices",
        json!({"addressType": "IPv4", "endpoints": [], "ports": [{"port": 80}]}),
    );
    assert_eq!(
        at(&slice, "/ports/0"),
        &json!({"name": "", "port": 80, "protocol": "TCP"})
    );

    let np = defaulted(
        "networking.k8s.io",
        "networkpolicies",
        json!({"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}}),
    );
    assert_eq!(at(&np, "/spec/policyTypes"), &json!(["Ingress"]));
    assert_eq!(at(&np, "/spec/ingress/0/ports/0/protocol"), "TCP");
    let np = defaulted(
        "networking.k8s.io",
        "networkpolicies",
        json!({"spec": {"podSelector": {}, "egress": [{}]}}),
    );
    assert_eq!(at(&np, "/spec/policyTypes"), &json!(["Ingress", "Egress"]));

    let pc = defaulted(
        "scheduling.k8s.io",
        "priorityclasses",
        json!({"metadata": {"name": "hi"}, "value": 10}),
    );
    assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");

    let ic = defaulted(
        "networking.k8s.io",
        "ingressclasses",
        json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/nginx", "parameters": {"kind": "X", "name": "y"}}}),
    );
    assert_eq!(at(&ic, "/spec/parameters/scope"), "Cluster");

    let ing = defaulted(
        "networking.k8s.io",
        "ingresses",
        json!({"spec": {"rules": [{"http": {"paths": [{"path": "/", "backend": {"service": {"name": "s", "port": {"number": 80}}}}]}}]}}),
    );
    // pathType has no default in networking/v1 (k8s-openapi writes the missing value as "").
    assert!(ing
        .pointer("/spec/rules/0/http/paths/0/pathType")
        .is_none_or(|v| v == ""));

    let lease = defaulted(
        "coordination.k8s.io",
        "leases",
        json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "x"}}),
    );
    assert_eq!(at(&lease, "/spec/holderIdentity"), "x");
}
