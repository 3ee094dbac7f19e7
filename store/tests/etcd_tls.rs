//! The etcd store against a real etcd that serves TLS only and requires client
//! certificates (`--client-cert-auth`), as kubeadm runs it.

use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures::StreamExt;
use store::testing::{EtcdPki, EtcdServer};
use store::{Error, EtcdConfig, EtcdStore, EtcdTls, Store, WatchEvent};

const WAIT: Duration = Duration::from_secs(10);

/// An error with its sources, as a log line shows it.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

/// A store for `etcd` with `tls` instead of the test PKI's client files; its requests
/// fail fast (etcd is up, so a failure is the handshake's).
async fn connect_with(etcd: &EtcdServer, tls: EtcdTls) -> anyhow::Result<EtcdStore> {
    let config = EtcdConfig {
        tls,
        request_timeout: Duration::from_secs(5),
        ..etcd.config()
    };
    Ok(EtcdStore::connect(config).await?)
}

#[tokio::test]
async fn serves_over_tls_with_a_client_certificate() -> anyhow::Result<()> {
    let etcd = EtcdServer::start_tls()?;
    assert!(etcd.endpoint().starts_with("https://127.0.0.1:"));
    let store = EtcdStore::connect(etcd.config()).await?;

    let before = store.current_revision().await?;
    let mut watch = store.watch("configmaps/", before).await?;
    let created = store
        .create("configmaps/default/a", Bytes::from_static(b"v1"))
        .await?;
    let updated = store
        .update(
            "configmaps/default/a",
            Bytes::from_static(b"v2"),
            created.mod_revision,
        )
        .await?;
    assert_eq!(store.get("configmaps/default/a").await?, Some(updated));
    let page = store.list("configmaps/", None, 0, None).await?;
    assert_eq!(page.items.len(), 1);

    // The watch streams over the same TLS connection.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Err(_) => bail!("no watch event within {WAIT:?}"),
            Ok(None) => bail!("the watch ended"),
            Ok(Some(event)) => match event? {
                WatchEvent::Put { kv, prev: None } => {
                    assert_eq!(kv.key, "configmaps/default/a");
                    break;
                }
                WatchEvent::Progress { .. } => continue,
                other => bail!("unexpected watch event {other:?}"),
            },
        }
    }
    Ok(())
}

#[tokio::test]
async fn without_a_client_certificate_etcd_refuses() -> anyhow::Result<()> {
    let etcd = EtcdServer::start_tls()?;
    let pki = etcd.pki().context("a TLS etcd has a PKI")?;
    let store = connect_with(
        &etcd,
        EtcdTls {
            ca_file: Some(pki.ca_cert.clone()),
            ..EtcdTls::default()
        },
    )
    .await?;
    let err = store
        .get("configmaps/default/a")
        .await
        .expect_err("etcd with --client-cert-auth refuses a client without a certificate");
    let text = chain(&err);
    assert!(
        matches!(err, Error::Unavailable(_) | Error::Timeout { .. }),
        "{text}"
    );
    // etcd answers with a TLS alert (certificate required or bad certificate, depending on
    // its Go version and timing) and closes the connection. Depending on whether the client
    // was still writing, hyper reports the alert, a closed connection, a broken pipe or a
    // reset; etcd's log names the missing certificate.
    assert!(
        [
            "connection closed",
            "CertificateRequired",
            "BadCertificate",
            "broken pipe",
            "reset by peer"
        ]
        .iter()
        .any(|cause| text.contains(cause)),
        "the error does not say what happened: {text}"
    );
    Ok(())
}

#[tokio::test]
async fn a_ca_that_did_not_sign_etcds_certificate_is_refused() -> anyhow::Result<()> {
    let etcd = EtcdServer::start_tls()?;
    let pki = etcd.pki().context("a TLS etcd has a PKI")?;
    let other_dir = tempfile::tempdir()?;
    let other = EtcdPki::generate(other_dir.path())?;
    let store = connect_with(
        &etcd,
        EtcdTls {
            ca_file: Some(other.ca_cert.clone()),
            ..pki.client_tls()
        },
    )
    .await?;
    let err = store
        .get("configmaps/default/a")
        .await
        .expect_err("etcd's certificate must not verify against another CA");
    let text = chain(&err);
    assert!(
        matches!(err, Error::Unavailable(_) | Error::Timeout { .. }),
        "{text}"
    );
    assert!(
        text.contains("UnknownIssuer") || text.contains("invalid peer certificate"),
        "the error does not say why: {text}"
    );
    Ok(())
}

#[tokio::test]
async fn unusable_tls_files_fail_at_connect() -> anyhow::Result<()> {
    let etcd = EtcdServer::start_tls()?;
    let pki = etcd.pki().context("a TLS etcd has a PKI")?;
    // A key that is not the certificate's.
    let err = connect_with(
        &etcd,
        EtcdTls {
            key_file: Some(pki.server_key.clone()),
            ..pki.client_tls()
        },
    )
    .await
    .expect_err("a certificate with another's key is refused");
    let text = err.to_string();
    assert!(text.contains("are not a certificate and its key"), "{text}");
    // A certificate without its key.
    let err = connect_with(
        &etcd,
        EtcdTls {
            key_file: None,
            ..pki.client_tls()
        },
    )
    .await
    .expect_err("a certificate without a key is refused");
    assert_eq!(
        err.to_string(),
        "invalid etcd TLS configuration: an etcd client certificate and its key must be given together"
    );
    Ok(())
}
