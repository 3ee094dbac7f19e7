//! kube-rs as a real client of a real apiserver on a real etcd.

use crate::common::{wait_until, TestApi};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

async fn namespace(client: &kube::Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

fn configmap(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    serde_json::from_value(
        json!({ "metadata": { "name": name, "labels": labels }, "data": { "k": "v" } }),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_crud_defaults_and_errors() {
    let api = TestApi::start().await;
    let client = api.client().await;
    namespace(&client, "crud").await;

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "crud");
    let created = cms
        .create(&PostParams::default(), &configmap("one", &[("app", "x")]))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let rv1 = created.metadata.resource_version.clone().unwrap();

    let got = cms.get("one").await.unwrap();
    assert_eq!(got.data.as_ref().unwrap()["k"], "v");

    // Update bumps the resourceVersion; a stale resourceVersion conflicts.
    let mut changed = got.clone();
    changed.data = Some(BTreeMap::from([("k".to_string(), "w".to_string())]));
    changed.metadata.resource_version = Some(rv1.clone());
    let updated = cms
        .replace("one", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );
    let stale = cms
        .replace("one", &PostParams::default(), &changed)
        .await
        .unwrap_err();
    match stale {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.reason, "Conflict");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }

    // Duplicate create and missing object.
    let dup = cms
        .create(&PostParams::default(), &configmap("one", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(dup, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{dup:?}"
    );
    let missing = cms.get("nope").await.unwrap_err();
    assert!(
        matches!(missing, kube::Error::Api(ref s) if s.code == 404 && s.reason == "NotFound"),
        "{missing:?}"
    );

    // Defaults are filled in as upstream does.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "crud");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "selector": { "matchLabels": { "app": "web" } },
            "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [{ "name": "c", "image": "busybox" }] } }
        }
    }))
    .unwrap();
    let d = deploys.create(&PostParams::default(), &d).await.unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.revision_history_limit, Some(10));
    let pod_spec = spec.template.spec.unwrap();
    assert_eq!(pod_spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        pod_spec.containers[0].image_pull_policy.as_deref(),
        Some("Always")
    );
    assert_eq!(d.metadata.generation, Some(1));

    // Patches: merge and strategic; a spec change bumps the generation.
    let patched = deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(json!({ "spec": { "template": { "spec": { "containers": [{ "name": "c", "image": "busybox:1.36" }] } } } })))
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    let c = &patched
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].image.as_deref(), Some("busybox:1.36"));
    let patched = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "team": "a" } } })),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    assert_eq!(patched.metadata.labels.unwrap()["team"], "a");
    // A patch naming the object's uid applies; naming another uid (the object was
    // replaced since the client looked) is refused: metadata.uid is immutable.
    let same = json!({ "metadata": { "uid": patched.metadata.uid, "labels": { "team": "b" } } });
    deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(same))
        .await
        .unwrap();
    let other = json!({ "metadata": { "uid": "00000000-0000-0000-0000-000000000000", "labels": { "team": "c" } } });
    let err = deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(other))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("metadata.uid")),
        "{err:?}"
    );
    let kept = deploys.get("web").await.unwrap();
    assert_eq!(
        (kept.metadata.uid.as_deref(), kept.labels()["team"].as_str()),
        (patched.metadata.uid.as_deref(), "b")
    );

    // Invalid objects are refused with 422 and nothing is stored.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "crud");
    let bad: Pod = serde_json::from_value(
        json!({ "metadata": { "name": "bad" }, "spec": { "containers": [] } }),
    )
    .unwrap();
    let err = pods.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.reason == "Invalid"),
        "{err:?}"
    );
    assert!(matches!(pods.get("bad").await, Err(kube::Error::Api(ref s)) if s.code == 404));

    // Creating into a missing namespace is refused.
    let nowhere: Api<ConfigMap> = Api::namespaced(client.clone(), "missing-ns");
    let err = nowhere
        .create(&PostParams::default(), &configmap("x", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );

    // Delete.
    cms.delete("one", &DeleteParams::default()).await.unwrap();
    assert!(matches!(cms.get("one").await, Err(kube::Error::Api(ref s)) if s.code == 404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_with_selectors_and_paging() {
    let api = TestApi::start().await;
    let client = api.client().await;
    namespace(&client, "paging").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "paging");
    for i in 0..25 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        cms.create(
            &PostParams::default(),
            &configmap(&format!("cm-{i:02}"), &[("tier", tier)]),
        )
        .await
        .unwrap();
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(10);
    let mut pages = 0;
    loop {
        let page = cms.list(&lp).await.unwrap();
        pages += 1;
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 25);
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 25);

    let odd = cms
        .list(&ListParams::default().labels("tier in (odd)"))
        .await
        .unwrap();
    assert_eq!(odd.items.len(), 12);
    let not_odd = cms
        .list(&ListParams::default().labels("tier!=odd"))
        .await
        .unwrap();
    assert_eq!(not_odd.items.len(), 13);
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=cm-03"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    // Paging with a selector still fills pages.
    let page = cms
        .list(&ListParams::default().labels("tier=even").limit(5))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 5);
    assert!(page.metadata.continue_.is_some_and(|c| !c.is_empty()));
    // resourceVersion=0 lists come from the watch cache.
    let cached = wait_until(Duration::from_secs(10), "the cache to hold all 25", || {
        let cms = cms.clone();
        async move {
            let l = cms.list(&ListParams::default().match_any()).await.ok()?;
            (l.items.len() == 25).then_some(l)
        }
    })
    .await;
    assert!(cached.metadata.resource_version.is_some());
    // A bad selector is a 400.
    let err = cms
        .list(&ListParams::default().labels("tier in ("))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 400),
        "{err:?}"
    );
    let err = cms
        .list(&ListParams::default().fields("spec.nope=1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 400),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_changes_and_survives_restart() {
    let mut api = TestApi::start().await;
    let client = api.client().await;
    namespace(&client, "watch").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "watch");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = watcher(cms.clone(), watcher::Config::default());
    let task = tokio::spawn(async move {
        let mut w = std::pin::pin!(w);
        while let Some(ev) = w.next().await {
            if let Ok(ev) = ev {
                let _ = tx.send(ev);
            }
        }
    });
    async fn next_matching(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<watcher::Event<ConfigMap>>,
        what: &str,
        f: impl Fn(&watcher::Event<ConfigMap>) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ev = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what}"));
            if f(ev.as_ref().unwrap()) {
                return;
            }
        }
    }
    let name_is = |ev: &watcher::Event<ConfigMap>, n: &str, deleted: bool| match ev {
        watcher::Event::Apply(c) | watcher::Event::InitApply(c) if !deleted => {
            c.metadata.name.as_deref() == Some(n)
        }
        watcher::Event::Delete(c) if deleted => c.metadata.name.as_deref() == Some(n),
        _ => false,
    };
    next_matching(&mut rx, "InitDone", |e| {
        matches!(e, watcher::Event::InitDone)
    })
    .await;
    cms.create(&PostParams::default(), &configmap("a", &[]))
        .await
        .unwrap();
    next_matching(&mut rx, "create of a", |e| name_is(e, "a", false)).await;
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "k": "changed" } })),
    )
    .await
    .unwrap();
    next_matching(&mut rx, "update of a", |e| matches!(e, watcher::Event::Apply(c) if c.data.as_ref().is_some_and(|d| d["k"] == "changed"))).await;
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    next_matching(&mut rx, "delete of a", |e| name_is(e, "a", true)).await;

    // Restart: nothing is lost and the watcher carries on.
    cms.create(&PostParams::default(), &configmap("before-restart", &[]))
        .await
        .unwrap();
    next_matching(&mut rx, "create before restart", |e| {
        name_is(e, "before-restart", false)
    })
    .await;
    api.restart().await;
    let fresh = api.client().await;
    let cms2: Api<ConfigMap> = Api::namespaced(fresh, "watch");
    assert!(cms2.get("before-restart").await.is_ok());
    wait_until(Duration::from_secs(30), "create after restart", || {
        let cms2 = cms2.clone();
        async move {
            cms2.create(&PostParams::default(), &configmap("after-restart", &[]))
                .await
                .ok()
        }
    })
    .await;
    next_matching(&mut rx, "create after restart", |e| {
        name_is(e, "after-restart", false)
    })
    .await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_unique_ips_and_node_ports_across_restarts() {
    let mut api = TestApi::start().await;
    let client = api.client().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let kubernetes = svcs.get("kubernetes").await.unwrap();
    assert_eq!(
        kubernetes.spec.unwrap().cluster_ip.as_deref(),
        Some("10.96.0.1")
    );
    let mk = |name: &str, ty: &str| -> Service {
        serde_json::from_value(json!({ "metadata": { "name": name }, "spec": { "type": ty, "selector": { "app": name }, "ports": [{ "port": 80 }] } })).unwrap()
    };
    let a = svcs
        .create(&PostParams::default(), &mk("a", "NodePort"))
        .await
        .unwrap();
    api.restart().await;
    let client = api.client().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let b = svcs
        .create(&PostParams::default(), &mk("b", "NodePort"))
        .await
        .unwrap();
    let ip = |s: &Service| s.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
    let np = |s: &Service| {
        s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
            .node_port
            .unwrap()
    };
    assert_ne!(ip(&a), ip(&b));
    assert_ne!(np(&a), np(&b));
    // A PUT that leaves out clusterIP and nodePort keeps what was allocated.
    let mut again = mk("b", "NodePort");
    again.metadata.resource_version = b.metadata.resource_version.clone();
    again.metadata.labels = Some(BTreeMap::from([("changed".to_string(), "yes".to_string())]));
    let again = svcs
        .replace("b", &PostParams::default(), &again)
        .await
        .unwrap();
    assert_eq!(ip(&again), ip(&b));
    assert_eq!(np(&again), np(&b));
    assert!((30000..=32767).contains(&np(&a)));
    // Asking for a taken nodePort is refused.
    let mut c = mk("c", "NodePort");
    c.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(np(&a));
    let err = svcs.create(&PostParams::default(), &c).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );
    // Released on delete, then reusable.
    svcs.delete("a", &DeleteParams::default()).await.unwrap();
    let c = svcs.create(&PostParams::default(), &c).await.unwrap();
    assert_eq!(np(&c), np(&a));
    // Turning a NodePort Service into a ClusterIP one drops (and frees) its node port.
    let b_port = np(&again);
    let plain = svcs
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "type": "ClusterIP" } })),
        )
        .await
        .unwrap();
    assert_eq!(
        plain.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port,
        None
    );
    assert_eq!(ip(&plain), ip(&b));
    let mut d = mk("d", "NodePort");
    d.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(b_port);
    let d = svcs.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(np(&d), b_port);

    // A LoadBalancer Service with externalTrafficPolicy Local gets a health-check node
    // port from the node-port range, kept across updates that leave it out and freed
    // when the policy goes back to Cluster.
    let hc = |s: &Service| s.spec.as_ref().unwrap().health_check_node_port;
    let mut lb = mk("lb", "LoadBalancer");
    lb.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
    let lb = svcs.create(&PostParams::default(), &lb).await.unwrap();
    let lb_hc = hc(&lb).expect("a healthCheckNodePort");
    assert!((30000..=32767).contains(&lb_hc));
    assert_ne!(lb_hc, np(&lb));
    let relabelled = svcs
        .patch(
            "lb",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "x": "y" } } })),
        )
        .await
        .unwrap();
    assert_eq!(hc(&relabelled), Some(lb_hc));
    let cluster = svcs
        .patch(
            "lb",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "externalTrafficPolicy": "Cluster" } })),
        )
        .await
        .unwrap();
    assert_eq!(hc(&cluster), None);
    let mut e = mk("e", "NodePort");
    e.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(lb_hc);
    let e = svcs.create(&PostParams::default(), &e).await.unwrap();
    assert_eq!(np(&e), lb_hc, "the freed health-check port is reusable");
    // Only LoadBalancer + Local may carry one.
    let mut f = mk("f", "NodePort");
    f.spec.as_mut().unwrap().health_check_node_port = Some(31999);
    let err = svcs.create(&PostParams::default(), &f).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_one_set_seen_through_two_apis() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    let api = TestApi::start().await;
    let client = api.client().await;
    let new_api: Api<Event> = Api::namespaced(client.clone(), "default");
    let core_api: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    // Recorders such as kube-runtime's write events.k8s.io/v1 ...
    let ev: Event = serde_json::from_value(json!({
        "metadata": { "name": "started" },
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "regarding": { "kind": "Pod", "namespace": "default", "name": "web" },
        "reason": "Started", "note": "container started", "type": "Normal",
        "action": "Start", "reportingController": "pikube/kubelet", "reportingInstance": "node-1",
    }))
    .unwrap();
    new_api.create(&PostParams::default(), &ev).await.unwrap();
    // ... and kubectl reads core/v1.
    let core = core_api.get("started").await.unwrap();
    assert_eq!(core.message.as_deref(), Some("container started"));
    assert_eq!(core.involved_object.name.as_deref(), Some("web"));
    assert_eq!(core.reporting_component.as_deref(), Some("pikube/kubelet"));
    let selected = core_api
        .list(&ListParams::default().fields("involvedObject.name=web"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);
    let out = api.kubectl_ok(&["get", "events", "-n", "default"]);
    assert!(
        out.contains("Started") && out.contains("pod/web") && out.contains("container started"),
        "{out}"
    );
    // A core write shows through events.k8s.io too, also from the cache.
    core_api
        .patch(
            "started",
            &PatchParams::default(),
            &Patch::Merge(json!({ "message": "changed" })),
        )
        .await
        .unwrap();
    let seen = new_api.get("started").await.unwrap();
    assert_eq!(seen.note.as_deref(), Some("changed"));
    let cached = wait_until(
        Duration::from_secs(10),
        "the cache to see the change",
        || {
            let new_api = new_api.clone();
            async move {
                let l = new_api
                    .list(&ListParams::default().match_any())
                    .await
                    .ok()?;
                l.items
                    .into_iter()
                    .find(|e| e.note.as_deref() == Some("changed"))
            }
        },
    )
    .await;
    assert_eq!(cached.regarding.unwrap().name.as_deref(), Some("web"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_compacts_etcd_history() {
    use kube::api::VersionMatch;
    let api =
        TestApi::start_with(|c| c.etcd_compaction_interval = Duration::from_millis(200)).await;
    let client = api.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = cms
        .create(&PostParams::default(), &configmap("first", &[]))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.unwrap();
    cms.create(&PostParams::default(), &configmap("second", &[]))
        .await
        .unwrap();
    // An exact read at the first revision works until the compactor passes it: then 410.
    wait_until(
        Duration::from_secs(20),
        "the first revision to be compacted",
        || {
            let cms = cms.clone();
            let rv = rv.clone();
            async move {
                let lp = ListParams::default().at(&rv).matching(VersionMatch::Exact);
                match cms.list(&lp).await {
                    Err(kube::Error::Api(s)) if s.code == 410 => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;
    // Nothing current was lost.
    assert_eq!(
        cms.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_fails_requests_and_readiness_then_recovers() {
    let mut api = TestApi::start().await;
    let client = api.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &configmap("before", &[]))
        .await
        .unwrap();
    let readyz = |client: kube::Client| async move {
        let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
        client.request_text(req).await.is_ok()
    };
    assert!(readyz(client.clone()).await);

    api.etcd.stop().unwrap();
    // Readiness reports etcd; a write fails with a server error instead of hanging.
    wait_until(Duration::from_secs(30), "readyz to fail", || {
        let client = client.clone();
        async move { (!readyz(client).await).then_some(()) }
    })
    .await;
    match cms
        .create(&PostParams::default(), &configmap("during", &[]))
        .await
    {
        Err(kube::Error::Api(s)) => assert!(s.code >= 500, "{s:?}"),
        other => panic!("a write without etcd must fail with a 5xx, got {other:?}"),
    }

    api.etcd.restart().unwrap();
    // Writes work again, nothing was lost, and the watch cache caught up.
    wait_until(
        Duration::from_secs(30),
        "a write after etcd is back",
        || {
            let cms = cms.clone();
            async move {
                cms.create(&PostParams::default(), &configmap("after", &[]))
                    .await
                    .ok()
            }
        },
    )
    .await;
    assert!(cms.get("before").await.is_ok());
    assert!(matches!(cms.get("during").await, Err(kube::Error::Api(ref s)) if s.code == 404));
    wait_until(
        Duration::from_secs(30),
        "the cache to show both objects",
        || {
            let cms = cms.clone();
            async move {
                let l = cms.list(&ListParams::default().match_any()).await.ok()?;
                let names: Vec<String> = l
                    .items
                    .into_iter()
                    .filter_map(|c| c.metadata.name)
                    .collect();
                (names.contains(&"before".to_string()) && names.contains(&"after".to_string()))
                    .then_some(())
            }
        },
    )
    .await;
    assert!(readyz(client.clone()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_started_before_etcd_serves_livez_and_bootstraps_when_etcd_arrives() {
    let mut api = TestApi::start().await;
    api.stop().await;
    api.etcd.stop().unwrap();
    api.restart_unready().await;
    let client = api.client().await;
    let get = |client: kube::Client, path: &'static str| async move {
        let req = http::Request::get(path).body(Vec::new()).unwrap();
        client.request_text(req).await.is_ok()
    };
    // Alive, not ready: upstream's split while etcd is unreachable.
    assert!(get(client.clone(), "/livez").await);
    assert!(!get(client.clone(), "/readyz").await);

    api.etcd.restart().unwrap();
    wait_until(Duration::from_secs(30), "readyz once etcd is there", || {
        let client = client.clone();
        async move { get(client, "/readyz").await.then_some(()) }
    })
    .await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    assert!(svcs.get("kubernetes").await.is_ok());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &configmap("after-start", &[]))
        .await
        .unwrap();
}
