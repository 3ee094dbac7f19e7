//! Certificates for a test etcd that serves TLS, made with rcgen and named as kubeadm
//! names them under `/etc/kubernetes/pki`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};

use super::{io, Error, Result};
use crate::EtcdTls;

/// An etcd CA (`etcd/ca.crt`), etcd's serving certificate for `localhost`, `127.0.0.1`
/// and `::1` (`etcd/server.crt`), and a client certificate the CA signed
/// (`apiserver-etcd-client.crt`), written to a folder.
#[derive(Clone, Debug)]
pub struct EtcdPki {
    /// The CA certificate; etcd's `--trusted-ca-file`, a client's `--etcd-cafile`.
    pub ca_cert: PathBuf,
    /// etcd's serving certificate (`--cert-file`).
    pub server_cert: PathBuf,
    /// Its key (`--key-file`).
    pub server_key: PathBuf,
    /// A client certificate (CN `kube-apiserver-etcd-client`), `--etcd-certfile`.
    pub client_cert: PathBuf,
    /// Its key, `--etcd-keyfile`.
    pub client_key: PathBuf,
}

impl EtcdPki {
    /// Makes a new CA and the certificates it signs in `dir` (created if missing).
    pub fn generate(dir: &Path) -> Result<Self> {
        let etcd_dir = dir.join("etcd");
        std::fs::create_dir_all(&etcd_dir).map_err(io("creating the etcd PKI folder"))?;
        let pki = Self {
            ca_cert: etcd_dir.join("ca.crt"),
            server_cert: etcd_dir.join("server.crt"),
            server_key: etcd_dir.join("server.key"),
            client_cert: dir.join("apiserver-etcd-client.crt"),
            client_key: dir.join("apiserver-etcd-client.key"),
        };
        let ca_key = KeyPair::generate().map_err(generate)?;
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "etcd-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).map_err(generate)?;
        write(&pki.ca_cert, &ca.pem())?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut server = CertificateParams::new(vec!["localhost".to_owned()]).map_err(generate)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.subject_alt_names.extend(
            [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]
            .map(SanType::IpAddress),
        );
        server.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        sign(&server, &issuer, &pki.server_cert, &pki.server_key)?;

        let mut client = CertificateParams::default();
        client
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver-etcd-client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        sign(&client, &issuer, &pki.client_cert, &pki.client_key)?;
        Ok(pki)
    }

    /// A client's TLS files: the CA and the client certificate and key.
    pub fn client_tls(&self) -> EtcdTls {
        EtcdTls {
            ca_file: Some(self.ca_cert.clone()),
            cert_file: Some(self.client_cert.clone()),
            key_file: Some(self.client_key.clone()),
        }
    }
}

fn sign(
    params: &CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<()> {
    let key = KeyPair::generate().map_err(generate)?;
    let cert = params.signed_by(&key, issuer).map_err(generate)?;
    write(cert_path, &cert.pem())?;
    write(key_path, &key.serialize_pem())
}

fn write(path: &Path, pem: &str) -> Result<()> {
    std::fs::write(path, pem).map_err(io(format!("writing {}", path.display())))
}

fn generate(err: rcgen::Error) -> Error {
    Error::Pki(err.to_string())
}
