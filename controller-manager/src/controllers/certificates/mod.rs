//! certificates.k8s.io controllers (upstream's `pkg/controller/certificates`): what the
//! signer and the approver share — reading the PEM request of a CertificateSigningRequest,
//! its conditions, and the checks that a request is a kubelet's client or serving
//! certificate (upstream's `IsKubeletClientCSR`, `IsKubeletServingCSR`).

pub mod approver;
pub mod cleaner;
pub mod signer;

use std::net::IpAddr;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// The signer of kubelets' client certificates.
pub const KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of client certificates for the apiserver.
pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// The signer of kubelets' serving certificates.
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

/// The group and name prefix of node identities.
pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("PEM block type must be CERTIFICATE REQUEST")]
    NotPem,
    #[error("parsing the certificate request: {0}")]
    Parse(String),
    #[error("the certificate request's signature does not verify")]
    Signature,
}

/// What a CSR asks for: the subject and the subject alternative names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub emails: Vec<String>,
    pub uris: Vec<String>,
    /// The PEM text, for the signer.
    pub pem: String,
}

/// Parses `spec.request` (PEM) and checks its signature.
pub fn parse_request(csr: &CertificateSigningRequest) -> Result<Request, RequestError> {
    let pem = String::from_utf8(csr.spec.request.0.clone()).map_err(|_| RequestError::NotPem)?;
    let der = api_types::validation::certificates::pem_block(pem.as_bytes(), "CERTIFICATE REQUEST")
        .map_err(|_| RequestError::NotPem)?;
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| RequestError::Parse(e.to_string()))?;
    req.verify_signature()
        .map_err(|_| RequestError::Signature)?;
    let info = &req.certification_request_info;
    let mut out = Request {
        pem,
        ..Request::default()
    };
    for cn in info.subject.iter_common_name() {
        if let Ok(s) = cn.as_str() {
            s.clone_into(&mut out.common_name);
        }
    }
    for o in info.subject.iter_organization() {
        if let Ok(s) = o.as_str() {
            out.organizations.push(s.to_string());
        }
    }
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => out.dns_names.push((*d).to_string()),
                    GeneralName::RFC822Name(e) => out.emails.push((*e).to_string()),
                    GeneralName::URI(u) => out.uris.push((*u).to_string()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                            out.ip_addresses.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                            out.ip_addresses.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

fn has_condition(csr: &CertificateSigningRequest, ty: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == ty && c.status == "True"))
}

pub fn is_approved(csr: &CertificateSigningRequest) -> bool {
    has_condition(csr, "Approved")
}

pub fn is_denied(csr: &CertificateSigningRequest) -> bool {
    has_condition(csr, "Denied")
}

pub fn is_failed(csr: &CertificateSigningRequest) -> bool {
    has_condition(csr, "Failed")
}

pub fn is_issued(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

fn usages(csr: &CertificateSigningRequest) -> Vec<&str> {
    csr.spec
        .usages
        .iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

/// Usages must include `required` and come from `allowed` ∪ {`required`}.
fn check_usages(
    csr: &CertificateSigningRequest,
    required: &str,
    allowed: &[&str],
) -> Result<(), String> {
    let usages = usages(csr);
    if !usages.contains(&required) {
        return Err(format!("usages did not contain {required:?}"));
    }
    if let Some(bad) = usages
        .iter()
        .find(|u| **u != required && !allowed.contains(u))
    {
        return Err(format!("usages contained an unexpected value {bad:?}"));
    }
    Ok(())
}

/// Whether the request is a kubelet client certificate as upstream's `ValidateKubeletClientCSR`:
/// O is exactly `system:nodes`, CN is `system:node:<name>`, no SANs, client auth (digital
/// signature and key encipherment allowed).
pub fn validate_kubelet_client(
    req: &Request,
    csr: &CertificateSigningRequest,
) -> Result<(), String> {
    if req.organizations != [NODES_GROUP] {
        return Err(format!("subject organization is not {NODES_GROUP}"));
    }
    if !req.dns_names.is_empty()
        || !req.emails.is_empty()
        || !req.ip_addresses.is_empty()
        || !req.uris.is_empty()
    {
        return Err("DNS, email, IP and URI subjectAltNames are not allowed".into());
    }
    if !req.common_name.starts_with(NODE_USER_PREFIX)
        || req.common_name.len() == NODE_USER_PREFIX.len()
    {
        return Err(format!(
            "subject common name does not begin with {NODE_USER_PREFIX}"
        ));
    }
    check_usages(
        csr,
        "client auth",
        &["digital signature", "key encipherment"],
    )
}

/// A kubelet serving certificate (upstream's `ValidateKubeletServingCSR`): node identity,
/// at least one DNS or IP SAN, no email or URI SANs, server auth.
pub fn validate_kubelet_serving(
    req: &Request,
    csr: &CertificateSigningRequest,
) -> Result<(), String> {
    if req.organizations != [NODES_GROUP] {
        return Err(format!("subject organization is not {NODES_GROUP}"));
    }
    if req.dns_names.is_empty() && req.ip_addresses.is_empty() {
        return Err("DNS or IP subjectAltName is required".into());
    }
    if !req.emails.is_empty() || !req.uris.is_empty() {
        return Err("email and URI subjectAltNames are not allowed".into());
    }
    if !req.common_name.starts_with(NODE_USER_PREFIX) {
        return Err(format!(
            "subject common name does not begin with {NODE_USER_PREFIX}"
        ));
    }
    check_usages(
        csr,
        "server auth",
        &["digital signature", "key encipherment"],
    )
}

/// A client certificate for the apiserver (`kube-apiserver-client`): client auth only.
pub fn validate_apiserver_client(
    _req: &Request,
    csr: &CertificateSigningRequest,
) -> Result<(), String> {
    check_usages(
        csr,
        "client auth",
        &["digital signature", "key encipherment"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use k8s_openapi::ByteString;

    pub(crate) fn csr_for(
        cn: &str,
        org: &str,
        sans: &[&str],
        usages: &[&str],
        signer: &str,
    ) -> CertificateSigningRequest {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if !org.is_empty() {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, org);
        }
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(pem.into_bytes()),
                signer_name: signer.into(),
                usages: Some(usages.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn kubelet_client_requests() {
        let ok = csr_for(
            "system:node:pi-1",
            NODES_GROUP,
            &[],
            &["digital signature", "client auth"],
            KUBE_APISERVER_CLIENT_KUBELET,
        );
        let req = parse_request(&ok).unwrap();
        assert_eq!(req.common_name, "system:node:pi-1");
        validate_kubelet_client(&req, &ok).unwrap();

        let wrong_org = csr_for(
            "system:node:pi-1",
            "system:masters",
            &[],
            &["client auth"],
            KUBE_APISERVER_CLIENT_KUBELET,
        );
        assert!(validate_kubelet_client(&parse_request(&wrong_org).unwrap(), &wrong_org).is_err());
        let wrong_cn = csr_for(
            "alice",
            NODES_GROUP,
            &[],
            &["client auth"],
            KUBE_APISERVER_CLIENT_KUBELET,
        );
        assert!(validate_kubelet_client(&parse_request(&wrong_cn).unwrap(), &wrong_cn).is_err());
        let with_san = csr_for(
            "system:node:pi-1",
            NODES_GROUP,
            &["pi-1"],
            &["client auth"],
            KUBE_APISERVER_CLIENT_KUBELET,
        );
        assert!(validate_kubelet_client(&parse_request(&with_san).unwrap(), &with_san).is_err());
        let server = csr_for(
            "system:node:pi-1",
            NODES_GROUP,
            &[],
            &["server auth"],
            KUBE_APISERVER_CLIENT_KUBELET,
        );
        assert!(validate_kubelet_client(&parse_request(&server).unwrap(), &server).is_err());

        let serving = csr_for(
            "system:node:pi-1",
            NODES_GROUP,
            &["pi-1", "10.0.0.5"],
            &["key encipherment", "server auth"],
            KUBELET_SERVING,
        );
        let req = parse_request(&serving).unwrap();
        assert_eq!(
            req.ip_addresses,
            vec!["10.0.0.5".parse::<IpAddr>().unwrap()]
        );
        validate_kubelet_serving(&req, &serving).unwrap();
    }

    #[test]
    fn a_tampered_request_is_refused() {
        let mut csr = csr_for(
            "system:node:pi-1",
            NODES_GROUP,
            &[],
            &["client auth"],
            KUBE_APISERVER_CLIENT_KUBELET,
        );
        let text = String::from_utf8(csr.spec.request.0.clone()).unwrap();
        let der =
            api_types::validation::certificates::pem_block(text.as_bytes(), "CERTIFICATE REQUEST")
                .unwrap();
        let mut der = der;
        let n = der.len();
        der[n - 3] ^= 0x55; // inside the signature
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD.encode(&der);
        csr.spec.request = ByteString(
            format!(
                "-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"
            )
            .into_bytes(),
        );
        assert!(parse_request(&csr).is_err());
    }
}
