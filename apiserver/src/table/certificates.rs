//! CertificateSigningRequests, as upstream's `printCertificateSigningRequest`: signer,
//! requestor, requested duration and the condition summary (`Approved,Issued`).

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::duration::human_duration;
use super::fields::{age, list_at, name, opt_int_at, str_at};
use super::Column;

pub(super) const CSR_COLUMNS: &[Column] = &[
    Column::name(),
    Column::age(),
    Column::new("SignerName", "string", ""),
    Column::new("Requestor", "string", ""),
    Column::new("RequestedDuration", "string", ""),
    Column::new("Condition", "string", ""),
];

/// `Pending`, `Approved` or `Denied`, then `,Failed` and `,Issued` as they apply.
fn condition_summary(csr: &Value) -> String {
    let (mut approved, mut denied, mut failed) = (false, false, false);
    for c in list_at(csr, &["status", "conditions"]) {
        match c.get("type").and_then(Value::as_str) {
            Some("Approved") => approved = true,
            Some("Denied") => denied = true,
            Some("Failed") => failed = true,
            _ => {}
        }
    }
    let mut status = if denied {
        "Denied"
    } else if approved {
        "Approved"
    } else {
        "Pending"
    }
    .to_string();
    if failed {
        status.push_str(",Failed");
    }
    if !str_at(csr, &["status", "certificate"]).is_empty() {
        status.push_str(",Issued");
    }
    status
}

pub(super) fn csr_cells(csr: &Value, now: Timestamp) -> Vec<Value> {
    let duration = opt_int_at(csr, &["spec", "expirationSeconds"]).map_or_else(
        || "<none>".to_string(),
        |s| human_duration(SignedDuration::from_secs(s)),
    );
    vec![
        Value::from(name(csr)),
        Value::from(age(csr, now)),
        Value::from(str_at(csr, &["spec", "signerName"])),
        Value::from(str_at(csr, &["spec", "username"])),
        Value::from(duration),
        Value::from(condition_summary(csr)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summary_follows_upstream() {
        let mut csr = json!({ "status": {} });
        assert_eq!(condition_summary(&csr), "Pending");
        csr["status"] = json!({ "conditions": [{ "type": "Approved", "status": "True" }], "certificate": "Zm9v" });
        assert_eq!(condition_summary(&csr), "Approved,Issued");
        csr["status"] = json!({ "conditions": [{ "type": "Denied", "status": "True" }] });
        assert_eq!(condition_summary(&csr), "Denied");
    }
}
