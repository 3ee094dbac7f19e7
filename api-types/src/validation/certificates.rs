//! certificates.k8s.io/v1 CertificateSigningRequest validation, as upstream's
//! `pkg/apis/certificates/validation`: `spec.request` is a PEM `CERTIFICATE REQUEST` whose
//! signature verifies, `signerName` is a qualified `<domain>/<path>` name, `usages` are
//! known key usages without duplicates, `expirationSeconds` is at least ten minutes;
//! conditions carry a type and status, Approved and Denied exclude each other, neither may
//! be removed once set, and `status.certificate` is PEM certificates, issued only when
//! Approved (and not Failed) and never changed afterwards.

use base64::Engine as _;
use serde_json::Value;
use x509_parser::prelude::FromDer;

use super::field::{self, FieldError, Path};
use super::names::is_dns1123_subdomain;

/// Upstream's `KeyUsage` values (certificates/v1).
pub const KEY_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// Condition types whose status must be `True` and which may appear once.
const UNIQUE_CONDITIONS: &[&str] = &["Approved", "Denied", "Failed"];

/// The bytes of a `[]byte` field as JSON carries them (base64).
pub fn bytes_field(v: Option<&Value>) -> Option<Vec<u8>> {
    let s = v?.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// Parses the first PEM block of `pem` with the given label into DER.
pub fn pem_block(pem: &[u8], label: &str) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| format!("PEM block type must be {label}"))?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| format!("PEM block type must be {label}"))?;
    let rest = &text[start + begin.len()..];
    let stop = rest
        .find(&end)
        .ok_or_else(|| format!("PEM block type must be {label}"))?;
    let body: String = rest[..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("failed to decode PEM block: {e}"))
}

/// Every PEM block of `pem`, with its label, in order.
pub fn pem_blocks(pem: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not PEM".to_string())?;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let label_end = after.find("-----").ok_or("malformed PEM header")?;
        let label = after[..label_end].to_string();
        let body_start = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let stop = body_start.find(&end_marker).ok_or("missing PEM end line")?;
        let body: String = body_start[..stop].split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("failed to decode PEM block: {e}"))?;
        out.push((label, der));
        rest = &body_start[stop + end_marker.len()..];
    }
    Ok(out)
}

/// Parses a PEM CSR and checks its self-signature (upstream's `ParseCSR` + `CheckSignature`).
pub fn parse_csr(pem: &[u8]) -> Result<Vec<u8>, String> {
    let der = pem_block(pem, "CERTIFICATE REQUEST")?;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| format!("asn1: structure error: {e}"))?;
    csr.verify_signature()
        .map_err(|e| format!("x509: CSR signature check failed: {e}"))?;
    Ok(der)
}

fn signer_name(name: &str, path: &Path) -> Vec<FieldError> {
    let Some((domain, rest)) = name.split_once('/') else {
        return vec![field::invalid(
            path,
            name,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        )];
    };
    let mut errs = Vec::new();
    if rest.is_empty() {
        errs.push(field::invalid(
            path,
            name,
            "validating path: must not be empty",
        ));
    }
    if !domain.contains('.') || !is_dns1123_subdomain(domain).is_empty() {
        errs.push(field::invalid(
            path,
            name,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
    }
    if name.len() > 571 {
        errs.push(field::too_long(path, 571));
    }
    errs
}

fn conditions(obj: &Value) -> Vec<&Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|c| c.iter().collect())
        .unwrap_or_default()
}

fn has_condition(obj: &Value, ty: &str) -> bool {
    conditions(obj)
        .iter()
        .any(|c| c.get("type").and_then(Value::as_str) == Some(ty))
}

fn status_checks(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let path = Path::new("status").child("conditions");
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in conditions(obj).iter().enumerate() {
        let p = path.index(i);
        let ty = c.get("type").and_then(Value::as_str).unwrap_or("");
        if ty.is_empty() {
            errs.push(field::required(&p.child("type"), ""));
        }
        let status = c.get("status").and_then(Value::as_str).unwrap_or("");
        if UNIQUE_CONDITIONS.contains(&ty) {
            if seen.contains(&ty) {
                errs.push(field::duplicate(&p.child("type"), ty));
            }
            seen.push(ty);
            if status != "True" {
                errs.push(field::not_supported(&p.child("status"), status, &["True"]));
            }
        } else if !matches!(status, "True" | "False" | "Unknown") {
            errs.push(field::not_supported(
                &p.child("status"),
                status,
                &["False", "True", "Unknown"],
            ));
        }
    }
    if has_condition(obj, "Approved") && has_condition(obj, "Denied") {
        errs.push(field::invalid(
            &path,
            Value::Null,
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    let cert_path = Path::new("status").child("certificate");
    if let Some(v) = obj.pointer("/status/certificate").filter(|v| !v.is_null()) {
        match bytes_field(Some(v)) {
            None => errs.push(field::invalid(
                &cert_path,
                "<certificate data>",
                "not base64",
            )),
            Some(pem) if !pem.is_empty() => match pem_blocks(&pem) {
                Ok(blocks) if blocks.is_empty() => errs.push(field::invalid(
                    &cert_path,
                    "<certificate data>",
                    "must contain at least one CERTIFICATE PEM block",
                )),
                Ok(blocks) => {
                    for (label, der) in blocks {
                        if label != "CERTIFICATE" {
                            errs.push(field::invalid(
                                &cert_path,
                                "<certificate data>",
                                &format!(
                                    "only CERTIFICATE PEM blocks are allowed, found {label:?}"
                                ),
                            ));
                        } else if x509_parser::parse_x509_certificate(&der).is_err() {
                            errs.push(field::invalid(
                                &cert_path,
                                "<certificate data>",
                                "x509: malformed certificate",
                            ));
                        }
                    }
                }
                Err(e) => errs.push(field::invalid(&cert_path, "<certificate data>", &e)),
            },
            Some(_) => {}
        }
    }
    errs
}

/// Create (and main-resource update) rules of a CSR.
pub(crate) fn csr(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = Path::new("spec");
    match bytes_field(obj.pointer("/spec/request")) {
        Some(pem) => {
            if let Err(e) = parse_csr(&pem) {
                errs.push(field::invalid(&spec.child("request"), "", &e));
            }
        }
        None => errs.push(field::required(&spec.child("request"), "")),
    }
    match obj.pointer("/spec/signerName").and_then(Value::as_str) {
        None | Some("") => errs.push(field::required(&spec.child("signerName"), "")),
        Some(name) => errs.extend(signer_name(name, &spec.child("signerName"))),
    }
    let usages: Vec<&str> = obj
        .pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|u| u.iter().map(|v| v.as_str().unwrap_or("")).collect())
        .unwrap_or_default();
    if usages.is_empty() {
        errs.push(field::required(
            &spec.child("usages"),
            "usages must be provided",
        ));
    }
    for (i, u) in usages.iter().enumerate() {
        let p = spec.child("usages").index(i);
        if !KEY_USAGES.contains(u) {
            errs.push(field::not_supported(&p, *u, KEY_USAGES));
        } else if usages[..i].contains(u) {
            errs.push(field::duplicate(&p, *u));
        }
    }
    if let Some(secs) = obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
    {
        if secs < 600 {
            errs.push(field::invalid(
                &spec.child("expirationSeconds"),
                secs,
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
    errs.extend(status_checks(obj));
    errs
}

/// Update rules shared by the main resource, `/status` and `/approval`: the spec is
/// immutable, Approved/Denied conditions stay, and a certificate is issued once, only to an
/// approved, not failed, request.
pub(crate) fn csr_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if new.get("spec") != old.get("spec") {
        errs.push(field::forbidden(&Path::new("spec"), "field is immutable"));
    }
    let path = Path::new("status").child("conditions");
    for ty in ["Approved", "Denied"] {
        if has_condition(old, ty) && !has_condition(new, ty) {
            errs.push(field::forbidden(
                &path,
                &format!("updates may not remove a condition of type {ty:?}"),
            ));
        }
    }
    let cert = |o: &Value| {
        o.pointer("/status/certificate")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let cert_path = Path::new("status").child("certificate");
    match (cert(old), cert(new)) {
        (Some(o), Some(n)) if o != n => errs.push(field::forbidden(
            &cert_path,
            "updates may not modify existing certificate content",
        )),
        (Some(_), None) => errs.push(field::forbidden(
            &cert_path,
            "updates may not remove existing certificate content",
        )),
        (None, Some(_)) => {
            if !has_condition(new, "Approved") {
                errs.push(field::forbidden(
                    &cert_path,
                    "certificate issuance not allowed unless Approved condition present",
                ));
            }
            if has_condition(new, "Failed") {
                errs.push(field::forbidden(
                    &cert_path,
                    "certificate issuance not allowed when Failed condition present",
                ));
            }
        }
        _ => {}
    }
    errs
}

/// `/status` and `/approval` updates: the status rules plus [`csr_update`].
pub(crate) fn csr_status_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = status_checks(new);
    errs.extend(csr_update(new, old));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A CSR for `system:node:pi-1` in `system:nodes` (P-256), made once with a CLI tool.
    const CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIHuMIGUAgEAMDIxFTATBgNVBAoMDHN5c3RlbTpub2RlczEZMBcGA1UEAwwQc3lz
dGVtOm5vZGU6cGktMTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABIIYMpt9435e
/kfxOyPkPf6KQqML3IyZgpzdc0ISvjb8l5PtUSo2p5VkDXC8Hfpx1jv5Csom9I/6
3CthjW672DegADAKBggqhkjOPQQDAgNJADBGAiEArfJkaeXkSUOjivLeq6M9tn7P
Xj6Mdb+jrQNqTlooSeMCIQDFTX2tvVWi6xeDhMYEuI1MQ6riS3jgGGwF3SKFfKza
UA==
-----END CERTIFICATE REQUEST-----
";

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn csr_obj() -> Value {
        json!({
            "metadata": { "name": "a" },
            "spec": {
                "request": b64(CSR),
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "usages": ["digital signature", "client auth"],
            }
        })
    }

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter()
            .map(|e| format!("{}: {}", e.field, e.reason()))
            .collect()
    }

    #[test]
    fn a_valid_request_passes() {
        assert!(csr(&csr_obj()).is_empty(), "{:?}", fields(&csr(&csr_obj())));
    }

    #[test]
    fn request_signer_usages_and_duration() {
        let mut o = csr_obj();
        // One flipped byte in the signature: it no longer verifies.
        let tampered = CSR.replacen("UA==", "UB==", 1);
        o["spec"]["request"] = json!(b64(&tampered));
        o["spec"]["signerName"] = json!("no-slash");
        o["spec"]["usages"] = json!(["client auth", "client auth", "teleport"]);
        o["spec"]["expirationSeconds"] = json!(60);
        let got = fields(&csr(&o));
        assert_eq!(
            got,
            [
                "spec.request: FieldValueInvalid",
                "spec.signerName: FieldValueInvalid",
                "spec.usages[1]: FieldValueDuplicate",
                "spec.usages[2]: FieldValueNotSupported",
                "spec.expirationSeconds: FieldValueInvalid",
            ]
        );
        let mut o = csr_obj();
        o["spec"].as_object_mut().unwrap().remove("signerName");
        o["spec"]["usages"] = json!([]);
        assert_eq!(
            fields(&csr(&o)),
            [
                "spec.signerName: FieldValueRequired",
                "spec.usages: FieldValueRequired"
            ]
        );
    }

    #[test]
    fn conditions_and_certificate_on_status_updates() {
        let old = csr_obj();
        let mut new = old.clone();
        new["status"] = json!({ "conditions": [
            { "type": "Approved", "status": "True" },
            { "type": "Denied", "status": "True" },
        ]});
        let got = fields(&csr_status_update(&new, &old));
        assert_eq!(got, ["status.conditions: FieldValueInvalid"]);

        new["status"] = json!({ "certificate": b64("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n") });
        let got = fields(&csr_status_update(&new, &old));
        assert!(
            got.contains(&"status.certificate: FieldValueForbidden".to_string()),
            "{got:?}"
        );

        let mut approved = old.clone();
        approved["status"] = json!({ "conditions": [{ "type": "Approved", "status": "True" }] });
        let mut withdrawn = approved.clone();
        withdrawn["status"] = json!({ "conditions": [] });
        assert_eq!(
            fields(&csr_status_update(&withdrawn, &approved)),
            ["status.conditions: FieldValueForbidden"]
        );
        let mut spec_changed = approved.clone();
        spec_changed["spec"]["signerName"] = json!("example.com/other");
        assert_eq!(
            fields(&csr_update(&spec_changed, &approved)),
            ["spec: FieldValueForbidden"]
        );
    }
}
